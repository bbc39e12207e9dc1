package ingest

import (
	"strings"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// TestShadowRulesRefused (issue 11, finding 5): values AWS IoT's shadow service does not document
// — numbers beyond float64, duplicate keys, empty keys, NUL, unpaired surrogates — get 4.00 with
// a diagnostic that says what is wrong, and nothing is stored; their well-behaved neighbours get
// 2.04.
func TestShadowRulesRefused(t *testing.T) {
	r := newRig(t)
	bad := []struct{ payload, diag string }{
		{`{"t":1e400}`, "number out of range"},
		{`{"t":-1e400}`, "number out of range"},
		{`{"t":1e-400}`, "number out of range"},
		{`{"t":1,"t":2}`, `duplicate key "t"`},
		{`{"t":1,"\u0074":2}`, `duplicate key "t"`},
		{`{"a":{"x":1,"x":null}}`, `duplicate key "x"`},
		{`{"":1}`, "empty key"},
		{`{"a":[{"":1}]}`, "empty key"},
		{`{"t":"a\u0000b"}`, `NUL (\u0000) in string`},
		{`{"\u0000":1}`, `NUL (\u0000) in string`},
		{`{"t":"\ud800"}`, "unpaired surrogate escape"},
	}
	for _, c := range bad {
		resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), c.payload)
		if resp.Code != coapmsg.BadRequest || !strings.HasPrefix(string(resp.Payload), c.diag) {
			t.Errorf("%s: %v %q, want 4.00 %q", c.payload, resp.Code, resp.Payload, c.diag)
		}
	}
	if n := r.sp.stored(); n != 0 {
		t.Fatalf("%d records stored, want none", n)
	}
	good := []string{`{"t":1e308,"u":-4.9e-324,"z":0e-999}`, `{"a":{"x":1},"b":{"x":2}}`, `{"t":"a\u0001b\ud83d\ude00"}`, `{"t":null}`}
	for _, p := range good {
		if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), p); resp.Code != coapmsg.Changed {
			t.Errorf("%s: %v %q, want 2.04", p, resp.Code, resp.Payload)
		}
	}
	if n := r.sp.stored(); n != len(good) {
		t.Fatalf("%d records stored, want %d", n, len(good))
	}
}
