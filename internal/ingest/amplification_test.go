package ingest

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// rawDo sends one CON request from the test peer and returns the raw request and response.
func (r *rig) rawDo(code coapmsg.Code, opts []coapmsg.Option, payload string) (req, resp []byte) {
	r.t.Helper()
	r.mid++
	slices.SortStableFunc(opts, func(a, b coapmsg.Option) int { return int(a.Number) - int(b.Number) })
	m := coapmsg.Message{Type: coapmsg.Confirmable, Code: code, MID: r.mid, Options: opts, Payload: []byte(payload)}
	req, err := m.Append(nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.ep.HandleDatagram(peer, req)
	r.cap.mu.Lock()
	defer r.cap.mu.Unlock()
	if len(r.cap.out) != 1 {
		r.t.Fatalf("%d responses, want 1", len(r.cap.out))
	}
	resp, r.cap.out = r.cap.out[0], nil
	return req, resp
}

// The smallest requests for every kind of answer (no token): none is answered with more than
// three times its size (TESTPLAN C19).
func TestNoAmplification(t *testing.T) {
	for _, c := range []struct {
		name    string
		code    coapmsg.Code
		opts    []coapmsg.Option
		payload string
	}{
		{"health", coapmsg.GET, pathOpts("health"), ""},
		{"well-known", coapmsg.GET, pathOpts(".well-known", "core"), ""},
		{"well-known rt", coapmsg.GET, append(pathOpts(".well-known", "core"), opt(coapmsg.URIQuery, "rt=*")), ""},
		{"no path", coapmsg.POST, nil, "{}"},
		{"bad type", coapmsg.POST, pathOpts(".", "b"), "{}"},
		{"three segments", coapmsg.POST, pathOpts("a", "b", "c"), ""},
		{"empty payload", coapmsg.POST, pathOpts("a", "b"), ""},
		{"bad JSON", coapmsg.POST, pathOpts("a", "b"), "{"},
		{"content-format", coapmsg.POST, append(pathOpts("a", "b"), opt(coapmsg.ContentFormat, "\x3c")), "{}"},
		{"critical option", coapmsg.POST, append(pathOpts("a", "b"), opt(9, "")), "{}"},
		{"Block1", coapmsg.POST, append(pathOpts("a", "b"), opt(coapmsg.Block1, "")), "{}"},
		{"unknown", coapmsg.GET, pathOpts("x"), ""},
		{"empty GET", coapmsg.GET, nil, ""},
	} {
		r := newRig(t)
		req, resp := r.rawDo(c.code, c.opts, c.payload)
		if len(resp) > maxAmplification*len(req) {
			t.Errorf("%s: answer of %d bytes to a request of %d", c.name, len(resp), len(req))
		}
	}
}

func TestEchoChallenge(t *testing.T) {
	// A long version string makes /health's answer more than three times even a request that
	// carries an Echo value, so that the value's validity decides.
	r := newRigWith(t, Config{GatewayID: "gw-test", Version: strings.Repeat("v", 100)})
	health := func(echo []byte) *coapmsg.Message {
		opts := pathOpts("health")
		if echo != nil {
			opts = append(opts, coapmsg.Option{Number: coapmsg.Echo, Value: echo})
		}
		return r.do(coapmsg.GET, opts, "")
	}
	resp := health(nil)
	echo, ok := resp.Option(coapmsg.Echo)
	if resp.Code != coapmsg.Unauthorized || !ok || len(echo) != echoLen || len(resp.Payload) != 0 {
		t.Fatalf("first GET /health: %v, Echo %x", resp.Code, echo)
	}
	if resp := health(echo); resp.Code != coapmsg.Content || !strings.Contains(string(resp.Payload), `"status":"ok"`) {
		t.Fatalf("GET /health with the Echo: %v %s", resp.Code, resp.Payload)
	}
	// A value is bound to the address, the time and the key.
	other := r.h.makeEcho(netip.MustParseAddrPort("127.0.0.1:40001"), time.Now())
	expired := r.h.makeEcho(peer, time.Now().Add(-echoLifetime-2*time.Second))
	future := r.h.makeEcho(peer, time.Now().Add(time.Hour))
	tampered := append([]byte(nil), echo...)
	tampered[len(tampered)-1] ^= 1
	otherKey := newRig(t).h.makeEcho(peer, time.Now())
	for name, v := range map[string][]byte{"another peer's": other, "expired": expired, "future": future,
		"tampered": tampered, "another key's": otherKey, "short": echo[:8]} {
		if resp := health(v); resp.Code != coapmsg.Unauthorized {
			t.Errorf("%s Echo: %v", name, resp.Code)
		}
	}
	// A request padded to a third of the answer needs no Echo.
	pad := coapmsg.Option{Number: coapmsg.URIHost, Value: []byte(strings.Repeat("h", 60))}
	pad.Value = append(pad.Value, ".example"...)
	if resp := r.do(coapmsg.GET, append(pathOpts("health"), pad), ""); resp.Code != coapmsg.Content {
		t.Errorf("padded GET /health: %v", resp.Code)
	}
}
