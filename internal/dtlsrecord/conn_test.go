package dtlsrecord

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"
)

// divert is the server's socket in these tests: pion uses it for the handshake; once taken,
// pion sends nothing more and the datagrams go to ch, for the record layer under test.
type divert struct {
	net.PacketConn
	taken atomic.Bool
	ch    chan []byte
}

func (d *divert) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := d.PacketConn.ReadFrom(b)
		if err != nil || !d.taken.Load() {
			return n, a, err
		}
		d.ch <- append([]byte(nil), b[:n]...)
	}
}

func (d *divert) WriteTo(b []byte, a net.Addr) (int, error) {
	if d.taken.Load() {
		return len(b), nil
	}
	return d.PacketConn.WriteTo(b, a)
}

// pair is a pion client talking to a record layer that took over from a pion server after the
// client's first record.
type pair struct {
	client *dtls.Conn
	rc     *Conn
	srv    *divert
	caddr  net.Addr
}

func newPair(t *testing.T, suite dtls.CipherSuiteID, cid bool) *pair {
	t.Helper()
	ls, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	lc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := &divert{PacketConn: ls, ch: make(chan []byte, 64)}
	psk := dtls.WithPSK(func([]byte) ([]byte, error) { return []byte("secretPSK-dev-1!"), nil })
	sopts := []dtls.ServerOption{psk, dtls.WithCipherSuites(suite)}
	copts := []dtls.ClientOption{psk, dtls.WithPSKIdentityHint([]byte("sensor/dev-1")), dtls.WithCipherSuites(suite)}
	if cid {
		sopts = append(sopts, dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(8)))
		copts = append(copts, dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
	}
	server, err := dtls.ServerWithOptions(d, lc.LocalAddr(), sopts...)
	if err != nil {
		t.Fatal(err)
	}
	client, err := dtls.ClientWithOptions(lc, ls.LocalAddr(), copts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- server.HandshakeContext(ctx) }()
	if err := client.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); lc.Close(); server.Close(); ls.Close() })
	// The first record reaches pion (so the client has the server's last flight); then the
	// record layer takes over.
	if _, err := client.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := server.Read(buf); err != nil || string(buf[:n]) != "first" {
		t.Fatalf("server read %q, %v", buf[:n], err)
	}
	d.taken.Store(true)
	st, ok := server.ConnectionState()
	if !ok {
		t.Fatal("no connection state")
	}
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ps, err := ParseState(b)
	if err != nil {
		t.Fatal(err)
	}
	if string(ps.IdentityHint) != "sensor/dev-1" || (len(ps.LocalConnectionID) == 8) != cid {
		t.Fatalf("state: identity %q, local CID %x", ps.IdentityHint, ps.LocalConnectionID)
	}
	rc, err := New(ps)
	if err != nil {
		t.Fatal(err)
	}
	return &pair{client: client, rc: rc, srv: d, caddr: lc.LocalAddr()}
}

// next is the next datagram the client sent.
func (p *pair) next(t *testing.T) []byte {
	t.Helper()
	select {
	case b := <-p.srv.ch:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no datagram from the client")
		return nil
	}
}

func (p *pair) send(t *testing.T, s string) []byte {
	t.Helper()
	if _, err := p.client.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	return p.next(t)
}

func (p *pair) answer(t *testing.T, s string) {
	t.Helper()
	rec, err := p.rc.Seal(nil, TypeApplicationData, []byte(s))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.srv.PacketConn.WriteTo(rec, p.caddr); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := p.client.Read(buf)
	if err != nil || string(buf[:n]) != s {
		t.Fatalf("client read %q, %v; want %q", buf[:n], err, s)
	}
}

// TestHandoverFromPion: after pion's handshake and first record, a pion client keeps
// exchanging records with the record layer, in both directions (sequence numbers continue
// from pion's), for each suite, with and without Connection ID.
func TestHandoverFromPion(t *testing.T) {
	for _, suite := range []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256} {
		for _, cid := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/cid=%v", dtls.CipherSuiteName(suite), cid), func(t *testing.T) {
				p := newPair(t, suite, cid)
				for i := 0; i < 100; i++ {
					msg := fmt.Sprint("request ", i)
					b := p.send(t, msg)
					r, n, err := p.rc.Open(b)
					if err != nil || n != len(b) || r.Type != TypeApplicationData || string(r.Data) != msg || !r.Newest {
						t.Fatalf("Open = %+v, %d, %v", r, n, err)
					}
					p.answer(t, fmt.Sprint("response ", i))
					if i == 50 { // asleep and awake again: the same keys
						p.rc.Sleep()
						if _, _, err := p.rc.Open(p.send(t, "x")); !errors.Is(err, ErrAsleep) {
							t.Fatalf("Open asleep: %v", err)
						}
						if err := p.rc.Wake(); err != nil {
							t.Fatal(err)
						}
					}
				}
				// The state carries on into a new record layer (a restart).
				rc2, err := New(p.rc.State())
				if err != nil {
					t.Fatal(err)
				}
				p.rc = rc2
				p.answer(t, "after the restart")
				b := p.send(t, "after the restart")
				if r, _, err := p.rc.Open(b); err != nil || string(r.Data) != "after the restart" {
					t.Fatalf("Open after the restart: %+v %v", r, err)
				}
			})
		}
	}
}

// TestOpenRefuses: replayed, tampered, reordered records and a close_notify.
func TestOpenRefuses(t *testing.T) {
	p := newPair(t, dtls.TLS_PSK_WITH_AES_128_CCM_8, true)
	a, b, c := p.send(t, "a"), p.send(t, "b"), p.send(t, "c")
	tampered := bytes.Clone(b)
	tampered[len(tampered)-3] ^= 1
	if _, _, err := p.rc.Open(tampered); !errors.Is(err, ErrAuth) {
		t.Fatalf("tampered: %v", err)
	}
	wrongCID := bytes.Clone(b)
	wrongCID[12] ^= 1
	if _, _, err := p.rc.Open(wrongCID); !errors.Is(err, ErrCID) {
		t.Fatalf("wrong CID: %v", err)
	}
	for _, step := range []struct {
		rec    []byte
		want   string
		newest bool
		err    error
	}{
		{c, "c", true, nil},
		{a, "a", false, nil}, // reordered within the window
		{b, "b", false, nil}, // the tampered copy did not mark it seen
		{a, "", false, ErrReplay},
		{c, "", false, ErrReplay},
	} {
		r, _, err := p.rc.Open(bytes.Clone(step.rec))
		if !errors.Is(err, step.err) || (err == nil && (string(r.Data) != step.want || r.Newest != step.newest)) {
			t.Fatalf("Open(%q) = %+v, %v; want %q newest=%v, %v", step.want, r, err, step.want, step.newest, step.err)
		}
	}
	// Records before the handover (pion accepted them) stay refused.
	old := bytes.Clone(a)
	old[10] = 0 // sequence number 0..255 of this epoch: pion's Finished and "first"
	old[9] = 0
	if _, _, err := p.rc.Open(old); !errors.Is(err, ErrReplay) && !errors.Is(err, ErrAuth) {
		t.Fatalf("old record: %v", err)
	}
	_ = p.client.Close()
	r, _, err := p.rc.Open(p.next(t))
	if err != nil || r.Type != TypeAlert || !bytes.Equal(r.Data, []byte{1, 0}) {
		t.Fatalf("close_notify: %+v %v", r, err)
	}
}
