package ingest

import (
	"bytes"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// errReadOnly is what the disk spool passes to done when its filesystem went read-only.
var errReadOnly = fmt.Errorf("%w: write segment 1: %w", spool.ErrUnavailable, syscall.EROFS)

func decode(t *testing.T, b []byte) *coapmsg.Message {
	t.Helper()
	var m coapmsg.Message
	if err := m.Decode(b); err != nil {
		t.Fatal(err)
	}
	return &m
}

// wait returns the next datagram the endpoint sends on its own (timers, deferred responses).
func (r *rig) wait() *coapmsg.Message {
	r.t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		switch out := r.take(); len(out) {
		case 0:
			continue
		case 1:
			return decode(r.t, out[0])
		default:
			r.t.Fatalf("%d datagrams at once, want 1", len(out))
		}
	}
	r.t.Fatal("nothing sent within 5 s")
	return nil
}

func maxAge(t *testing.T, m *coapmsg.Message) uint32 {
	t.Helper()
	v, ok := m.Option(coapmsg.MaxAge)
	n, _ := coapmsg.Uint(v)
	if !ok {
		t.Fatalf("%v without Max-Age", m.Code)
	}
	return n
}

// TestSlowSpoolSeparateResponse (TESTPLAN 14, 22 "fsync taking seconds"): a durable write slower
// than the piggyback deadline gets an empty ACK first and its answer later as a separate CON
// response carrying the request's token: 2.04 once stored, exactly one record even though the
// device retransmitted meanwhile; 5.03 with Max-Age if the slow write then fails, with nothing
// stored. Once the spool is fast and healthy again, the next request gets a piggybacked 2.04.
func TestSlowSpoolSeparateResponse(t *testing.T) {
	r := newRigOpts(t, Config{GatewayID: "gw-test", RetryAfter: 7},
		coapserver.Options{PiggybackDeadline: 20 * time.Millisecond})
	slow := make(chan error)
	r.sp.slow = slow
	token := []byte{0xde, 0xad, 0xbe, 0xef}

	// sendSlow sends a POST whose write blocks, checks the empty ACK and returns the request.
	sendSlow := func() []byte {
		t.Helper()
		req, out := r.send(coapmsg.Confirmable, coapmsg.POST, token, pathOpts("sensor", "dev-1"), `{"t":1}`)
		var ack *coapmsg.Message
		switch len(out) {
		case 0:
			ack = r.wait()
		case 1: // the timers may already have fired on a loaded machine
			ack = decode(t, out[0])
		default:
			t.Fatalf("%d datagrams for one request", len(out))
		}
		if ack.Type != coapmsg.Acknowledgement || ack.Code != coapmsg.Empty || ack.MID != r.mid || len(ack.Token) != 0 {
			t.Fatalf("after the piggyback deadline: %v %v MID %d token %x, want an empty ACK with MID %d",
				ack.Type, ack.Code, ack.MID, ack.Token, r.mid)
		}
		return req
	}
	// separate checks a separate CON response with code want, acknowledges it and returns it.
	separate := func(want coapmsg.Code) *coapmsg.Message {
		t.Helper()
		sep := r.wait()
		if sep.Type != coapmsg.Confirmable || sep.Code != want || !bytes.Equal(sep.Token, token) {
			t.Fatalf("separate response: %v %v token %x, want CON %v token %x", sep.Type, sep.Code, sep.Token, want, token)
		}
		ack := coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Empty, MID: sep.MID}
		b, _ := ack.Append(nil)
		if out := r.raw(b); len(out) != 0 {
			t.Fatal("the endpoint answered an ACK")
		}
		return sep
	}

	req := sendSlow()
	if r.sp.stored() != 0 {
		t.Fatal("stored before the write completed")
	}
	// A retransmission of the request (it crossed the empty ACK) gets the empty ACK again and is
	// not appended a second time.
	if out := r.raw(req); len(out) != 1 || decode(t, out[0]).Code != coapmsg.Empty {
		t.Fatalf("retransmission: %d datagrams, want the empty ACK again", len(out))
	}
	slow <- nil
	separate(coapmsg.Changed)
	if n := r.sp.stored(); n != 1 || r.h.Accepted() != 1 {
		t.Fatalf("%d records stored, %d accepted; want exactly 1", n, r.h.Accepted())
	}
	if out := r.raw(req); len(out) != 1 || r.sp.stored() != 1 {
		t.Fatalf("late retransmission: %d datagrams, %d records", len(out), r.sp.stored())
	}

	// The disk turns read-only while the write is slow: 5.03 + Max-Age, never 2.04.
	sendSlow()
	slow <- errReadOnly
	if sep := separate(coapmsg.ServiceUnavailable); maxAge(t, sep) != 7 {
		t.Fatalf("Max-Age %d, want the configured 7", maxAge(t, sep))
	}
	if n := r.sp.stored(); n != 1 || r.h.Accepted() != 1 {
		t.Fatalf("after the failed write: %d records stored, %d accepted; want 1", n, r.h.Accepted())
	}

	// Healthy and fast again: the same handler answers 2.04 in the ACK.
	r.sp.mu.Lock()
	r.sp.slow = nil
	r.sp.mu.Unlock()
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), `{"t":2}`); resp.Type != coapmsg.Acknowledgement || resp.Code != coapmsg.Changed {
		t.Fatalf("after recovery: %v %v, want a piggybacked 2.04", resp.Type, resp.Code)
	}
	if n := r.sp.stored(); n != 2 {
		t.Fatalf("%d records stored, want 2", n)
	}
}

// TestSpoolUnavailableRecovers (TESTPLAN 22 "read-only disk"): while every spool write fails with
// ErrUnavailable, each request gets 5.03 with the configured Max-Age, nothing is stored or counted
// as accepted, and the failures are counted as spool errors; once the spool is healthy the next
// request gets 2.04 from the same handler, without a restart.
func TestSpoolUnavailableRecovers(t *testing.T) {
	r := newRigWith(t, Config{GatewayID: "gw-test", RetryAfter: 7})
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), `{"t":1}`); resp.Code != coapmsg.Changed {
		t.Fatalf("before the fault: %v", resp.Code)
	}
	r.sp.fail = errReadOnly
	for i := range 3 {
		resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), `{"t":2}`)
		if resp.Code != coapmsg.ServiceUnavailable || maxAge(t, resp) != 7 {
			t.Fatalf("request %d during the fault: %v Max-Age %d, want 5.03 Max-Age 7", i, resp.Code, maxAge(t, resp))
		}
	}
	if n := r.sp.stored(); n != 1 || r.h.Accepted() != 1 {
		t.Fatalf("during the fault: %d stored, %d accepted; want the 1 from before", n, r.h.Accepted())
	}
	if got := testutil.ToFloat64(r.h.results[resError]); got != 3 {
		t.Fatalf("spool_error = %v, want 3", got)
	}
	r.sp.fail = nil
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), `{"t":3}`); resp.Code != coapmsg.Changed {
		t.Fatalf("after the fault: %v %q, want 2.04", resp.Code, resp.Payload)
	}
	var rec record.Record
	if n := r.sp.stored(); n != 2 || record.Decode(r.sp.data[1], &rec) != nil || string(rec.Payload) != `{"t":3}` {
		t.Fatalf("after the fault: %d stored, last %q; want 2, the last {\"t\":3}", n, rec.Payload)
	}
}

// TestUnknownCriticalOption (TESTPLAN 5): an unrecognised critical option (odd number) in a CON
// request gets 4.02 with a diagnostic naming it, on any resource, and has no side effect. In a NON
// request the message must be rejected instead (RFC 7252 §5.4.1, §4.3): no answer, nothing stored.
func TestUnknownCriticalOption(t *testing.T) {
	cases := []struct {
		name string
		code coapmsg.Code
		opts []coapmsg.Option
		want string
	}{
		{"option 9 on telemetry", coapmsg.POST, append(pathOpts("a", "b"), opt(9, "x")), "unsupported critical option 9"},
		{"Block1 on telemetry", coapmsg.PUT, append(pathOpts("a", "b"), opt(coapmsg.Block1, "\x08")), "unsupported critical option 27"},
		{"option 65001 on telemetry", coapmsg.POST, append(pathOpts("a", "b"), opt(65001, "")), "unsupported critical option 65001"},
		{"option 9 on /health", coapmsg.GET, append(pathOpts("health"), opt(9, "x")), "unsupported critical option 9"},
		// A known critical option repeated or of illegal length is treated as unrecognised (§5.4.5, §5.4.3).
		{"two Uri-Host", coapmsg.POST, append(pathOpts("a", "b"), opt(coapmsg.URIHost, "h"), opt(coapmsg.URIHost, "i")), "unsupported critical option 3"},
		{"3-byte Accept", coapmsg.GET, append(pathOpts("health"), opt(coapmsg.Accept, "\x00\x00\x32")), "unsupported critical option 17"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			payload := ""
			if c.code != coapmsg.GET {
				payload = `{}`
			}
			resp := r.do(c.code, c.opts, payload)
			if resp.Code != coapmsg.BadOption || string(resp.Payload) != c.want {
				t.Fatalf("CON: %v %q, want 4.02 %q", resp.Code, resp.Payload, c.want)
			}
			if _, out := r.send(coapmsg.NonConfirmable, c.code, []byte{1, 2}, c.opts, payload); len(out) != 0 {
				m := decode(t, out[0])
				t.Fatalf("NON: answered %v %v, want it rejected (silently ignored)", m.Type, m.Code)
			}
			if r.sp.stored() != 0 || r.h.Accepted() != 0 {
				t.Fatal("a request with an unknown critical option was stored")
			}
		})
	}
}

// TestContentFormatLength (TESTPLAN 5): Content-Format is an elective uint of 0–2 bytes (RFC 7252
// §5.10). A value of another length is treated like an unrecognised option (§5.4.3), which for an
// elective one means ignored: the payload is taken as JSON, the default, and the record does not
// claim the bogus format. Within 0–2 bytes the value counts: empty is the uint 0 (text/plain, so
// 4.15), and a leading zero byte is allowed (§3.2).
func TestContentFormatLength(t *testing.T) {
	cases := []struct {
		name   string
		value  string
		want   coapmsg.Code
		record uint16 // Content-Format in the stored record
	}{
		{"3 bytes, 50", "\x00\x00\x32", coapmsg.Changed, record.NoContentFormat},
		{"3 bytes, 60", "\x00\x00\x3c", coapmsg.Changed, record.NoContentFormat},
		{"5 bytes", "\x00\x00\x00\x00\x32", coapmsg.Changed, record.NoContentFormat},
		{"2 bytes, leading zero", "\x00\x32", coapmsg.Changed, 50},
		{"empty: text/plain", "", coapmsg.UnsupportedFormat, 0},
		{"2 bytes, 41", "\x00\x29", coapmsg.UnsupportedFormat, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			resp := r.do(coapmsg.POST, append(pathOpts("a", "b"), opt(coapmsg.ContentFormat, c.value)), `{"x":1}`)
			if resp.Code != c.want {
				t.Fatalf("code %v %q, want %v", resp.Code, resp.Payload, c.want)
			}
			if c.want != coapmsg.Changed {
				if r.sp.stored() != 0 {
					t.Fatal("rejected request stored")
				}
				return
			}
			var rec record.Record
			if r.sp.stored() != 1 || record.Decode(r.sp.data[0], &rec) != nil {
				t.Fatalf("%d records stored, want 1", r.sp.stored())
			}
			if rec.ContentFormat != c.record {
				t.Fatalf("record content-format %d, want %d", rec.ContentFormat, c.record)
			}
		})
	}
}

// TestNonRequests (TESTPLAN 11): a NON request gets a NON response carrying its token byte for
// byte, with the code its CON counterpart gets in the ACK; a duplicate NON is ignored and stores
// nothing more.
func TestNonRequests(t *testing.T) {
	cases := []struct {
		name    string
		code    coapmsg.Code
		opts    []coapmsg.Option
		payload string
		want    coapmsg.Code
		stored  int // records stored by the CON and the NON together
	}{
		{"PUT telemetry", coapmsg.PUT, pathOpts("sensor", "dev-1"), `{"t":1}`, coapmsg.Changed, 2},
		{"POST telemetry", coapmsg.POST, pathOpts("sensor", "dev-1"), `{"t":1}`, coapmsg.Changed, 2},
		{"DELETE a thing", coapmsg.DELETE, pathOpts("a", "b"), ``, coapmsg.MethodNotAllowed, 0},
		{"GET unknown", coapmsg.GET, pathOpts("nope"), ``, coapmsg.NotFound, 0},
		{"invalid JSON", coapmsg.POST, pathOpts("a", "b"), `{`, coapmsg.BadRequest, 0},
	}
	token := []byte{9, 8, 7, 6, 5, 4, 3, 2}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			if resp := r.do(c.code, c.opts, c.payload); resp.Type != coapmsg.Acknowledgement || resp.Code != c.want {
				t.Fatalf("CON: %v %v, want ACK %v", resp.Type, resp.Code, c.want)
			}
			req, out := r.send(coapmsg.NonConfirmable, c.code, token, c.opts, c.payload)
			if len(out) != 1 {
				t.Fatalf("NON: %d responses, want 1", len(out))
			}
			if resp := decode(t, out[0]); resp.Type != coapmsg.NonConfirmable || resp.Code != c.want || !bytes.Equal(resp.Token, token) {
				t.Fatalf("NON: %v %v token %x, want NON %v token %x", resp.Type, resp.Code, resp.Token, c.want, token)
			}
			if out := r.raw(req); len(out) != 0 {
				t.Fatal("duplicate NON answered")
			}
			if n := r.sp.stored(); n != c.stored {
				t.Fatalf("%d records stored, want %d", n, c.stored)
			}
		})
	}

	// GET /health: its answer would amplify the request, so CON and NON alike first get 4.01 with
	// an Echo (amplification.go), then 2.05 when they repeat it with the Echo value.
	r := newRig(t)
	for _, typ := range []coapmsg.Type{coapmsg.Confirmable, coapmsg.NonConfirmable} {
		var echo []byte
		for i, want := range []coapmsg.Code{coapmsg.Unauthorized, coapmsg.Content} {
			opts := pathOpts("health")
			if echo != nil {
				opts = append(opts, opt(coapmsg.Echo, string(echo)))
			}
			_, out := r.send(typ, coapmsg.GET, token, opts, "")
			if len(out) != 1 {
				t.Fatalf("%v GET /health #%d: %d responses, want 1", typ, i, len(out))
			}
			resp := decode(t, out[0])
			wantType := coapmsg.Acknowledgement
			if typ == coapmsg.NonConfirmable {
				wantType = coapmsg.NonConfirmable
			}
			if resp.Type != wantType || resp.Code != want || !bytes.Equal(resp.Token, token) {
				t.Fatalf("%v GET /health #%d: %v %v token %x, want %v %v token %x", typ, i, resp.Type, resp.Code, resp.Token, wantType, want, token)
			}
			echo, _ = resp.Option(coapmsg.Echo)
			if want == coapmsg.Unauthorized && len(echo) == 0 {
				t.Fatalf("%v GET /health: 4.01 without Echo", typ)
			}
			if want == coapmsg.Content && !bytes.HasPrefix(resp.Payload, []byte(`{"status":"ok"`)) {
				t.Fatalf("%v GET /health: body %q", typ, resp.Payload)
			}
		}
	}
}
