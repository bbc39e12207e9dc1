package ingest

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/credential"
	"github.com/coapgw/coapgw/internal/registry"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeStore binds the things in bound; Lookup is not used by ingest.
type fakeStore struct {
	bound map[string]bool
	err   error
}

func (f *fakeStore) Lookup(context.Context, string) (credential.Credential, error) {
	return credential.Credential{}, credential.ErrUnknown
}

func (f *fakeStore) Bound(_ context.Context, _, thing string) (bool, error) {
	return f.bound[thing], f.err
}

// identityRig is a rig whose requests carry identity, as the DTLS transport will set it (""
// = plain CoAP).
type identityRig struct {
	*rig
	identity string
}

func newIdentityRig(t *testing.T, cfg Config) *identityRig {
	sp := &fakeSpool{}
	h, err := New(cfg, sp, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ir := &identityRig{}
	c := &capture{}
	ep := coapserver.NewEndpoint(coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		r.Identity = ir.identity
		h.ServeCoAP(w, r)
	}), c, coapserver.Options{}, nil, nil)
	ir.rig = &rig{t: t, sp: sp, h: h, cap: c, ep: ep}
	return ir
}

func (r *identityRig) expect(identity, typ, id string, want coapmsg.Code, diag string) {
	r.t.Helper()
	r.identity = identity
	resp := r.do(coapmsg.POST, pathOpts(typ, id), `{"t":1}`)
	if resp.Code != want || !strings.Contains(string(resp.Payload), diag) {
		r.t.Fatalf("%q writing /%s/%s: %v %q, want %v %q", identity, typ, id, resp.Code, resp.Payload, want, diag)
	}
}

// TestIdentityBinding: an authenticated session may write only its own /{type}/{id}; another
// thing, or the same thing under another type, gets 4.03 with a diagnostic, stores nothing and
// costs the identity no rate token.
func TestIdentityBinding(t *testing.T) {
	for _, policy := range []string{PlainOpen, PlainUnbound, PlainOff} {
		t.Run(policy, func(t *testing.T) {
			r := newIdentityRig(t, Config{GatewayID: "gw", DeviceRate: 1, DeviceBurst: 1,
				Credentials: &fakeStore{bound: map[string]bool{"dev-1": true, "dev-2": true}}, PlainPolicy: policy})
			r.expect("sensor/dev-1", "sensor", "dev-2", coapmsg.Forbidden, "identity sensor/dev-1 may write only /sensor/dev-1")
			r.expect("sensor/dev-1", "meter", "dev-1", coapmsg.Forbidden, "may write only /sensor/dev-1")
			r.expect("sensor/dev-1", "sensor", "dev-10", coapmsg.Forbidden, "may write only")
			r.expect("sensor/dev-1", "sensor", "dev-1", coapmsg.Changed, "")
			if n := r.sp.stored(); n != 1 {
				t.Fatalf("%d records stored, want 1", n)
			}
			if got := testutil.ToFloat64(r.h.results[resUnauthorized]); got != 3 {
				t.Fatalf("unauthorized counted %v, want 3", got)
			}
		})
	}
}

// TestPlainPolicy: plain CoAP to a thing with a credential gets 4.01 under unbound and 2.04
// under open; a thing without one is accepted under both; off refuses every plain write.
func TestPlainPolicy(t *testing.T) {
	store := &fakeStore{bound: map[string]bool{"dev-1": true}}
	for _, tc := range []struct {
		policy     string
		store      credential.Store
		bound, not coapmsg.Code
		diag       string
	}{
		{PlainOpen, store, coapmsg.Changed, coapmsg.Changed, ""},
		{"", nil, coapmsg.Changed, coapmsg.Changed, ""}, // no credentials: open, as before
		{PlainUnbound, store, coapmsg.Unauthorized, coapmsg.Changed, "thing requires DTLS"},
		{"", store, coapmsg.Unauthorized, coapmsg.Changed, "thing requires DTLS"}, // the default with credentials
		{PlainOff, store, coapmsg.Unauthorized, coapmsg.Unauthorized, "DTLS required"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			r := newIdentityRig(t, Config{GatewayID: "gw", Credentials: tc.store, PlainPolicy: tc.policy})
			r.expect("", "sensor", "dev-1", tc.bound, tc.diag)
			r.expect("", "sensor", "dev-2", tc.not, "")
			// An authenticated request for the bound thing is accepted under every policy.
			r.expect("sensor/dev-1", "sensor", "dev-1", coapmsg.Changed, "")
		})
	}
	// A store that cannot answer: 5.03, nothing stored (fail closed).
	r := newIdentityRig(t, Config{GatewayID: "gw", Credentials: &fakeStore{err: errors.New("boom")}})
	r.expect("", "sensor", "dev-1", coapmsg.ServiceUnavailable, "credential check unavailable")
	if r.sp.stored() != 0 {
		t.Fatal("stored a record whose binding could not be checked")
	}
}

func TestPlainPolicyConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{PlainPolicy: PlainUnbound}, "needs a credential source"},
		{Config{PlainPolicy: "closed"}, `policy "closed": want open, unbound or off`},
	} {
		if _, err := New(tc.cfg, &fakeSpool{}, nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestRateLimitKeyedOnIdentity: a spoofer naming the device's URI over plain CoAP (policy open)
// spends the plain bucket of /sensor/dev-1, not the DTLS device's, and vice versa.
func TestRateLimitKeyedOnIdentity(t *testing.T) {
	r := newIdentityRig(t, Config{GatewayID: "gw", DeviceRate: 1, DeviceBurst: 2,
		Credentials: &fakeStore{bound: map[string]bool{"dev-1": true}}, PlainPolicy: PlainOpen})
	r.expect("", "sensor", "dev-1", coapmsg.Changed, "")
	r.expect("", "sensor", "dev-1", coapmsg.Changed, "")
	r.expect("", "sensor", "dev-1", coapmsg.ServiceUnavailable, "device over its rate limit")
	// The device still has its whole burst.
	r.expect("sensor/dev-1", "sensor", "dev-1", coapmsg.Changed, "")
	r.expect("sensor/dev-1", "sensor", "dev-1", coapmsg.Changed, "")
	r.expect("sensor/dev-1", "sensor", "dev-1", coapmsg.ServiceUnavailable, "device over its rate limit")
}

func TestIdentityNames(t *testing.T) {
	for _, tc := range []struct {
		id, typ, thing string
		want           bool
	}{
		{"a/b", "a", "b", true},
		{"sensor/dev-1", "sensor", "dev-1", true},
		{"sensor/dev-1", "sensor", "dev-", false},
		{"sensor/dev-1", "senso", "r/dev-1", false},
		{"sensor/dev-1", "sensor/", "dev-1", false},
		{"sensor-dev-1", "sensor", "dev-1", false},
		{"", "a", "b", false},
	} {
		if got := identityNames(tc.id, []byte(tc.typ), []byte(tc.thing)); got != tc.want {
			t.Errorf("identityNames(%q, %q, %q) = %v", tc.id, tc.typ, tc.thing, got)
		}
	}
}

func TestPlainWarning(t *testing.T) {
	for _, tc := range []struct {
		policy, addr string
		warn         bool
	}{
		{"", ":5683", true},
		{PlainOpen, "0.0.0.0:5683", true},
		{PlainOpen, "[::]:5683", true},
		{PlainOpen, "192.0.2.7:5683", true},
		{PlainOpen, "gateway.example:5683", true},
		{PlainOpen, "127.0.0.1:5683", false},
		{PlainOpen, "[::1]:5683", false},
		{PlainOpen, "localhost:5683", false},
		{PlainUnbound, ":5683", false},
		{PlainOff, ":5683", false},
	} {
		w := PlainWarning(tc.policy, tc.addr)
		if (w != "") != tc.warn || tc.warn && !strings.Contains(w, tc.addr) {
			t.Errorf("PlainWarning(%q, %q) = %q, want a warning: %v", tc.policy, tc.addr, w, tc.warn)
		}
	}
}

// TestPlainUnboundNoAlloc: under the policy unbound, with the registry-backed store, a plain
// request for a thing without a credential still allocates only the exchange's ResponseWriter:
// Bound is answered from memory, not by a query per datagram.
func TestPlainUnboundNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	reg, err := registry.Open(filepath.Join(t.TempDir(), "registry.db"), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	sealer, _ := credential.NewSealer(bytes.Repeat([]byte{1}, credential.OperatorKeyLen))
	store, err := credential.NewLocal(t.Context(), reg, sealer, credential.LocalOptions{Refresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Add(t.Context(), "sensor/dev-2", nil); err != nil {
		t.Fatal(err)
	}
	sp := &nopSpool{}
	h, err := New(Config{GatewayID: "gw", Credentials: store}, sp, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &lastCode{}
	ep := coapserver.NewEndpoint(h, c, coapserver.Options{DedupPerPeerCap: 64}, nil, nil)
	m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, Token: []byte{1, 2, 3, 4},
		Options: append(pathOpts("sensor", "dev-1"), cf(50)), Payload: []byte(`{"temp":21.5}`)}
	reqs := make([][]byte, 256)
	for i := range reqs {
		m.MID = uint16(i)
		reqs[i], _ = m.Append(nil)
	}
	p := netip.MustParseAddrPort("192.0.2.1:5683")
	i := 0
	step := func() {
		ep.HandleDatagram(p, reqs[i%len(reqs)])
		i++
	}
	for range 2 * len(reqs) {
		step()
	}
	if n := testing.AllocsPerRun(1000, step); n > 1 {
		t.Fatalf("%v allocs per plain request under unbound, want at most 1", n)
	}
	if c.code != coapmsg.Changed || sp.n != c.n {
		t.Fatalf("last answer %v, %d stored of %d; want all 2.04", c.code, sp.n, c.n)
	}
	// The bound thing is refused.
	m.Options = append(pathOpts("sensor", "dev-2"), cf(50))
	b, _ := m.Append(nil)
	ep.HandleDatagram(p, b)
	if c.code != coapmsg.Unauthorized {
		t.Fatalf("bound thing over plain CoAP: %v, want 4.01", c.code)
	}
}
