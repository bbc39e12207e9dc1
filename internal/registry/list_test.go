package registry

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/coapgw/coapgw/internal/record"
)

// TestThingsSorted: every sort and order of the things list, walked in pages of 7 (with a type
// filter and a prefix too), gives every thing once, in the order computed here from the things
// themselves; a cursor of another sort or order is ErrInvalidCursor, an unknown sort or order
// ErrInvalidQuery.
func TestThingsSorted(t *testing.T) {
	e := newEnv(t, Options{})
	types := []string{"meter", "alpha", "sensor"}
	for i := range 30 {
		name := fmt.Sprintf("dev-%02d", (i*7)%30) // created out of name order
		// Each thing gets 1 to 4 records, each in its own second (so counted = messages), and
		// first and last seen times that differ in order from creation and name.
		n := 1 + (i*5)%4
		for k := range n {
			e.send(rec(types[i%3], name, float64(100*((i*11)%30)+10*k), `{"v":1}`))
		}
	}
	all, err := e.r.Things(t.Context(), ThingQuery{Limit: 1000})
	if err != nil || len(all.Things) != 30 {
		t.Fatalf("all things: %d, %v", len(all.Things), err)
	}
	byName := func(a, b Thing) int { return strings.Compare(a.Name, b.Name) }
	sorts := map[string]func(a, b Thing) int{
		SortName: byName,
		SortType: func(a, b Thing) int { return cmp.Or(strings.Compare(a.Type, b.Type), byName(a, b)) },
		// Ties (same first second, same count) go by id, creation order: compare names of the
		// same key as a set below instead.
		SortFirstSeen: func(a, b Thing) int { return a.FirstSeen.Compare(b.FirstSeen) },
		SortMessages:  func(a, b Thing) int { return cmp.Compare(a.Messages, b.Messages) },
		SortLastSeen:  func(a, b Thing) int { return cmp.Compare(a.LastSeen.Unix(), b.LastSeen.Unix()) },
	}
	for _, sort := range ThingSorts {
		for _, order := range []string{"", OrderAsc, OrderDesc} {
			for _, filter := range []ThingQuery{{}, {Type: "sensor"}, {Prefix: "dev-1"}} {
				q := filter
				q.Sort, q.Order, q.Limit = sort, order, 7
				var got []Thing
				for page := 0; ; page++ {
					p, err := e.r.Things(t.Context(), q)
					if err != nil {
						t.Fatalf("%+v: %v", q, err)
					}
					got = append(got, p.Things...)
					if p.Next == "" {
						break
					}
					q.Cursor = p.Next
					if page > 10 {
						t.Fatalf("%+v: endless paging", q)
					}
				}
				want := slices.DeleteFunc(slices.Clone(all.Things), func(th Thing) bool {
					return filter.Type != "" && th.Type != filter.Type || !strings.HasPrefix(th.Name, filter.Prefix)
				})
				desc := order == OrderDesc || order == "" && DefaultOrder(sort) == OrderDesc
				less := sorts[sort]
				if desc {
					less = func(a, b Thing) int { return sorts[sort](b, a) }
				}
				if len(got) != len(want) {
					t.Fatalf("%s %s %+v: %d things, want %d", sort, order, filter, len(got), len(want))
				}
				seen := map[string]bool{}
				for i, th := range got {
					if seen[th.Name] {
						t.Fatalf("%s %s %+v: %s twice", sort, order, filter, th.Name)
					}
					seen[th.Name] = true
					if i > 0 && less(got[i-1], th) > 0 {
						t.Fatalf("%s %s %+v: %s before %s", sort, order, filter, got[i-1].Name, th.Name)
					}
				}
			}
		}
	}
	p, err := e.r.Things(t.Context(), ThingQuery{Sort: SortName, Limit: 3})
	if err != nil || p.Next == "" {
		t.Fatal(p, err)
	}
	for _, q := range []ThingQuery{{Sort: SortType, Cursor: p.Next}, {Sort: SortName, Order: OrderDesc, Cursor: p.Next}} {
		if _, err := e.r.Things(t.Context(), q); !errors.Is(err, ErrInvalidCursor) {
			t.Errorf("%+v: %v, want ErrInvalidCursor", q, err)
		}
	}
	for _, q := range []ThingQuery{{Sort: "size"}, {Order: "up"}, {Latest: MaxLatest + 1}} {
		if _, err := e.r.Things(t.Context(), q); !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("%+v: %v, want ErrInvalidQuery", q, err)
		}
	}
}

// TestThingsListQueryPlan: every sort and order, with and without a type filter and a cursor,
// is an index walk: no sort of the table in a temporary B-tree.
func TestThingsListQueryPlan(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "dev-1", 1, `{"v":1}`), rec("meter", "dev-2", 2, `{"v":1}`))
	for _, sort := range ThingSorts {
		for _, order := range []string{OrderAsc, OrderDesc} {
			for _, typ := range []string{"", "sensor"} {
				for _, after := range [][]any{nil, {"x"}} {
					q := ThingQuery{Sort: sort, Order: order, Type: typ, Latest: 3}
					if after != nil {
						after = []any{int64(5), int64(1)}
						switch sort {
						case SortName:
							after = []any{"dev-1"}
						case SortType:
							after = []any{"meter", "dev-2"}
						}
					}
					query, args := listQuery(q, 1, after, 51)
					if p := e.queryPlan(query, args...); strings.Contains(p, "TEMP B-TREE") || !strings.Contains(p, "INDEX") {
						t.Errorf("%s %s type=%q cursor=%v: plan %s", sort, order, typ, after != nil, p)
					}
				}
			}
		}
	}
}

// TestThingsLatest: with Latest, each thing of a page carries its newest scalar values (ties by
// property), shown by property, with their SenML units; arrays and long strings are left out.
func TestThingsLatest(t *testing.T) {
	e := newEnv(t, Options{})
	long := strings.Repeat("x", 80)
	e.send(rec("sensor", "a", 10, `{"temp":21.5,"env":{"hum":40},"mode":"eco","arr":[1,2],"note":"`+long+`"}`))
	e.send(rec("sensor", "a", 20, `{"temp":22}`))
	pack := rec("sensor", "b", 30, `[{"bn":"b/","n":"temp","u":"Cel","v":19.5},{"n":"bat","u":"V","v":3.1}]`)
	pack.ContentFormat = record.FormatSenMLJSON
	e.send(pack)
	p, err := e.r.Things(t.Context(), ThingQuery{Sort: SortName, Latest: 2})
	if err != nil || len(p.Things) != 2 {
		t.Fatal(p, err)
	}
	show := func(th Thing) string {
		var b strings.Builder
		for _, v := range th.Latest {
			fmt.Fprintf(&b, "%s=%s%s@%d ", v.Property, v.Value, v.Unit, v.T.Sub(t0).Milliseconds()/1000)
		}
		return b.String()
	}
	// a: temp is newest (20 s); of the rest, all at 10 s, "env.hum" comes first by name.
	if got, want := show(p.Things[0]), "env.hum=40@10 temp=22@20 "; got != want {
		t.Errorf("a: %q, want %q", got, want)
	}
	if got, want := show(p.Things[1]), "b/bat=3.1V@30 b/temp=19.5Cel@30 "; got != want {
		t.Errorf("b: %q, want %q", got, want)
	}
	p, err = e.r.Things(t.Context(), ThingQuery{Sort: SortName, Latest: MaxLatest})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := show(p.Things[0]), "env.hum=40@10 mode=\"eco\"@10 temp=22@20 "; got != want {
		t.Errorf("a, every value: %q, want %q", got, want)
	}
	p, err = e.r.Things(t.Context(), ThingQuery{})
	if err != nil || p.Things[0].Latest != nil {
		t.Errorf("without Latest: %+v, %v", p.Things[0].Latest, err)
	}
}

// TestThingsSortedByMessagesBurst: a thing that sent a burst of records within one second and
// went quiet sorts by its count (within 6%), although the second of its last_seen changed only
// once: 60 records in one second come before 50 records in 50 seconds.
func TestThingsSortedByMessagesBurst(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "burst", 1, `{"v":0}`))
	for i := range 59 {
		e.send(rec("sensor", "burst", 2+float64(i)/100, `{"v":1}`)) // one batch each, all in second 2
	}
	for i := range 50 {
		e.send(rec("sensor", "steady", float64(10+i), `{"v":1}`))
	}
	p, err := e.r.Things(t.Context(), ThingQuery{Sort: SortMessages})
	if err != nil || len(p.Things) != 2 {
		t.Fatal(p, err)
	}
	if p.Things[0].Name != "burst" || p.Things[0].Messages != 60 {
		t.Errorf("by messages: %s (%d) first, want burst (60)", p.Things[0].Name, p.Things[0].Messages)
	}
}
