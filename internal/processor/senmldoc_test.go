package processor

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/coapgw/coapgw/internal/record"
)

// TestSenMLDoc: the document DecodeReadings builds in one pass is the one SetValue builds from
// record.Latest, for packs short and long (more than 16 readings), names in and out of order,
// repeated names at equal and different times.
func TestSenMLDoc(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 1; n < 40; n++ {
		for range 20 {
			rs := make([]record.Reading, n)
			for i := range rs {
				rs[i] = record.Reading{Name: fmt.Sprintf("n%d", rng.IntN(n+1)), Time: int64(rng.IntN(3)),
					Value: fmt.Appendf(nil, "%d", rng.IntN(100))}
			}
			want := NewDoc()
			for _, r := range record.Latest(rs) {
				if err := want.SetValue(r.Name, r.Time, r.Value); err != nil {
					t.Fatal(err)
				}
			}
			got := senmlDoc(rs)
			if g, w := got.AppendState(nil), want.AppendState(nil); string(g) != string(w) {
				t.Fatalf("%+v: state %s, want %s", rs, g, w)
			}
			wk, gk := want.Root().Len(), got.Root().Len()
			for i := 0; i < wk && i < gk; i++ {
				wm, gm := want.root.kids[i], got.root.kids[i]
				if wm.key != gm.key || wm.ts != gm.ts || string(wm.val) != string(gm.val) {
					t.Fatalf("%+v: member %d %s@%d, want %s@%d", rs, i, gm.key, gm.ts, wm.key, wm.ts)
				}
			}
			if wk != gk {
				t.Fatalf("%+v: %d members, want %d", rs, gk, wk)
			}
		}
	}
}
