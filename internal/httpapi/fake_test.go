package httpapi

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coapgw/coapgw/internal/registry"
)

// fakeStore is an in-memory Store that behaves like the registry's read API: things newest
// LastSeen first, opaque cursors, AWS-shaped shadows with per-property metadata timestamps and a
// numeric history per property.
type fakeStore struct {
	mu        sync.Mutex
	types     map[string]time.Time
	things    map[string]*fakeThing
	setAsides []registry.SetAside // oldest first
	messages  int64
	err       error // returned by every call when set
	lastThing registry.ThingQuery
	lastHist  registry.HistoryQuery
	gate      chan struct{} // when set before serving: Things, Thing and History wait for it to close
}

// wait blocks until the gate (if any) is closed, to show a page before its data.
func (f *fakeStore) wait() {
	if f.gate != nil {
		<-f.gate
	}
}

type fakeThing struct {
	registry.Thing
	reported map[string]any
	meta     map[string]any // mirrors reported, leaves {"timestamp": epochSeconds}
	history  map[string][]registry.Point
	units    map[string]string // property -> SenML unit, set by tests
	latest   map[string]registry.Value
}

func newFakeStore() *fakeStore {
	return &fakeStore{types: map[string]time.Time{}, things: map[string]*fakeThing{}}
}

var _ Store = (*fakeStore)(nil)

// report applies one telemetry record to the thing, creating it (and its type) if new.
func (f *fakeStore) report(name, typ string, at time.Time, state map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at = at.UTC()
	if _, ok := f.types[typ]; !ok {
		f.types[typ] = at
	}
	t, ok := f.things[name]
	if !ok {
		t = &fakeThing{
			Thing:    registry.Thing{Name: name, Type: typ, FirstSeen: at},
			reported: map[string]any{}, meta: map[string]any{}, history: map[string][]registry.Point{},
		}
		f.things[name] = t
	}
	t.LastSeen = at
	t.Messages++
	if len(state) > 0 { // as the registry: an empty update changes nothing, so no new version
		t.Version++
	}
	f.messages++
	merge(t.reported, t.meta, state, "", at, t.history)
	if t.latest == nil {
		t.latest = map[string]registry.Value{}
	}
	var walk func(m map[string]any, prefix string)
	walk = func(m map[string]any, prefix string) {
		for k, v := range m {
			if prefix != "" {
				k = prefix + "." + k
			}
			if obj, ok := v.(map[string]any); ok {
				walk(obj, k)
				continue
			}
			b, _ := json.Marshal(v)
			t.latest[k] = registry.Value{Property: k, Value: b, T: at}
		}
	}
	walk(state, "")
}

// latestValues is what the registry gives as Thing.Latest: the n newest values (ties by
// property), by property, with units.
func (t *fakeThing) latestValues(n int) []registry.Value {
	vals := slices.Collect(maps.Values(t.latest))
	slices.SortFunc(vals, func(a, b registry.Value) int {
		return cmp.Or(b.T.Compare(a.T), strings.Compare(a.Property, b.Property))
	})
	vals = vals[:min(n, len(vals))]
	for i := range vals {
		vals[i].Unit = t.units[vals[i].Property]
	}
	slices.SortFunc(vals, func(a, b registry.Value) int { return strings.Compare(a.Property, b.Property) })
	return vals
}

func merge(dst, meta, src map[string]any, prefix string, at time.Time, hist map[string][]registry.Point) {
	for k, v := range src {
		path := k
		if prefix != "" {
			path = prefix + "." + k
		}
		if obj, ok := v.(map[string]any); ok {
			d, _ := dst[k].(map[string]any)
			m, _ := meta[k].(map[string]any)
			if d == nil {
				d, m = map[string]any{}, map[string]any{}
				dst[k], meta[k] = d, m
			}
			merge(d, m, obj, path, at, hist)
			continue
		}
		dst[k] = v
		meta[k] = map[string]any{"timestamp": at.Unix()}
		var num float64
		switch n := v.(type) {
		case float64:
			num = n
		case int:
			num = float64(n)
		default:
			continue
		}
		hist[path] = append(hist[path], registry.Point{T: at, V: num})
	}
}

// lastQuery is the query of the last Things call.
func (f *fakeStore) lastQuery() registry.ThingQuery {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastThing
}

func (f *fakeStore) setAside(r registry.SetAside) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setAsides = append(f.setAsides, r)
}

func (f *fakeStore) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeStore) ThingTypes(ctx context.Context) ([]registry.ThingType, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	var out []registry.ThingType
	for _, name := range slices.Sorted(maps.Keys(f.types)) {
		tt := registry.ThingType{Name: name, CreatedAt: f.types[name]}
		for _, t := range f.things {
			if t.Type == name {
				tt.Things++
			}
		}
		out = append(out, tt)
	}
	return out, nil
}

func decodeCursor(c string) (int, error) {
	if c == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimPrefix(c, "o"))
	if err != nil || !strings.HasPrefix(c, "o") {
		return 0, fmt.Errorf("decode cursor %q: %w", c, registry.ErrInvalidCursor)
	}
	return n, nil
}

func (f *fakeStore) Things(ctx context.Context, q registry.ThingQuery) (registry.ThingPage, error) {
	f.wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastThing = q
	if f.err != nil {
		return registry.ThingPage{}, f.err
	}
	if q.Limit == 0 {
		q.Limit = 100
	}
	off, err := decodeCursor(q.Cursor)
	if err != nil {
		return registry.ThingPage{}, err
	}
	var all []registry.Thing
	for _, t := range f.things {
		if (q.Type == "" || t.Type == q.Type) && strings.HasPrefix(t.Name, q.Prefix) {
			th := t.Thing
			if q.Latest > 0 {
				th.Latest = t.latestValues(q.Latest)
			}
			all = append(all, th)
		}
	}
	sort := cmp.Or(q.Sort, registry.SortLastSeen)
	byKey := map[string]func(a, b registry.Thing) int{
		registry.SortLastSeen:  func(a, b registry.Thing) int { return a.LastSeen.Compare(b.LastSeen) },
		registry.SortFirstSeen: func(a, b registry.Thing) int { return a.FirstSeen.Compare(b.FirstSeen) },
		registry.SortMessages:  func(a, b registry.Thing) int { return cmp.Compare(a.Messages, b.Messages) },
		registry.SortName:      func(a, b registry.Thing) int { return 0 },
		registry.SortType:      func(a, b registry.Thing) int { return strings.Compare(a.Type, b.Type) },
	}[sort]
	if byKey == nil {
		return registry.ThingPage{}, fmt.Errorf("%w: sort %q", registry.ErrInvalidQuery, q.Sort)
	}
	desc := cmp.Or(q.Order, registry.DefaultOrder(sort)) == registry.OrderDesc
	slices.SortFunc(all, func(a, b registry.Thing) int {
		c := cmp.Or(byKey(a, b), strings.Compare(a.Name, b.Name))
		if desc {
			return -c
		}
		return c
	})
	page := registry.ThingPage{Total: int64(len(all))}
	if off < len(all) {
		end := min(len(all), off+q.Limit)
		page.Things = all[off:end]
		if end < len(all) {
			page.Next = "o" + strconv.Itoa(end)
		}
	}
	return page, nil
}

func (f *fakeStore) Thing(ctx context.Context, name string) (registry.Thing, error) {
	f.wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return registry.Thing{}, f.err
	}
	t, ok := f.things[name]
	if !ok {
		return registry.Thing{}, registry.ErrNotFound
	}
	return t.Thing, nil
}

func (f *fakeStore) Shadow(ctx context.Context, name string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	t, ok := f.things[name]
	if !ok || t.Version == 0 {
		return nil, registry.ErrNotFound // as the registry: a thing that only sent {} has no shadow
	}
	return json.Marshal(map[string]any{
		"state":     map[string]any{"reported": t.reported},
		"metadata":  map[string]any{"reported": t.meta},
		"version":   t.Version,
		"timestamp": t.LastSeen.Unix(),
	})
}

func (f *fakeStore) History(ctx context.Context, name string, q registry.HistoryQuery) ([]registry.Series, error) {
	f.wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastHist = q
	if f.err != nil {
		return nil, f.err
	}
	t, ok := f.things[name]
	if !ok {
		return nil, nil // as the registry may: no history, no error
	}
	if q.Limit == 0 {
		q.Limit = 1000
	}
	var out []registry.Series
	for _, prop := range slices.Sorted(maps.Keys(t.history)) {
		if q.Property != "" && prop != q.Property {
			continue
		}
		var pts []registry.Point
		for _, p := range t.history[prop] {
			if !p.T.Before(q.Since) {
				pts = append(pts, p)
			}
		}
		if len(pts) > q.Limit {
			pts = pts[len(pts)-q.Limit:]
		}
		out = append(out, registry.Series{Property: prop, Unit: t.units[prop], Points: pts})
	}
	return out, nil
}

func (f *fakeStore) SetAsides(ctx context.Context, limit int, cursor string) (registry.SetAsidePage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return registry.SetAsidePage{}, f.err
	}
	off, err := decodeCursor(cursor)
	if err != nil {
		return registry.SetAsidePage{}, err
	}
	page := registry.SetAsidePage{Total: int64(len(f.setAsides))}
	for i := len(f.setAsides) - 1 - off; i >= 0 && len(page.Records) < limit; i-- {
		page.Records = append(page.Records, f.setAsides[i])
	}
	if end := off + len(page.Records); end < len(f.setAsides) {
		page.Next = "o" + strconv.Itoa(end)
	}
	return page, nil
}

func (f *fakeStore) Counts(ctx context.Context) (registry.Counts, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return registry.Counts{}, f.err
	}
	return registry.Counts{
		ThingTypes: int64(len(f.types)), Things: int64(len(f.things)),
		Messages: f.messages, SetAside: int64(len(f.setAsides)),
	}, nil
}

func (f *fakeStore) DeleteThing(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if _, ok := f.things[name]; !ok {
		return registry.ErrNotFound
	}
	delete(f.things, name)
	return nil
}

var _ SetAsideStore = (*fakeStore)(nil)

func (f *fakeStore) SetAsideReasons(ctx context.Context) ([]registry.SetAsideReason, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	var out []registry.SetAsideReason
	idx := map[string]int{}
	for _, s := range f.setAsides {
		i, ok := idx[s.Reason]
		if !ok {
			i = len(out)
			idx[s.Reason] = i
			out = append(out, registry.SetAsideReason{Reason: s.Reason})
		}
		out[i].Count++
		if s.At.After(out[i].Last) {
			out[i].Last = s.At
		}
	}
	slices.SortStableFunc(out, func(x, y registry.SetAsideReason) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), y.Last.Compare(x.Last))
	})
	return out, nil
}

func (f *fakeStore) DismissSetAsides(ctx context.Context, reason string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	n := len(f.setAsides)
	f.setAsides = slices.DeleteFunc(f.setAsides, func(s registry.SetAside) bool { return s.Reason == reason })
	return int64(n - len(f.setAsides)), nil
}
