package dtlsserver

import (
	"context"
	"crypto/sha256"
	"net/netip"
	"testing"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"

	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/dtlsrecord"
)

// fuzzCID is the Connection ID of the session FuzzDatagram's server has in its record layer.
const fuzzCID = "fuzzcid!"

// fuzzSession is a made-up established session, as the state file would restore it, and its
// client's record layer.
func fuzzSession(f *testing.F) (savedSession, *dtlsrecord.Conn) {
	st := dtlsrecord.State{HandshakeComplete: true, LocalEpoch: 1, RemoteEpoch: 1, RemoteSequenceNumber: 1, SequenceNumber: 1,
		CipherSuiteID: uint16(dtls.TLS_PSK_WITH_AES_128_CCM_8), MasterSecret: make([]byte, 48), LocalConnectionID: []byte(fuzzCID)}
	st.LocalRandom[0], st.RemoteRandom[0] = 1, 2
	b, err := st.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	client, err := dtlsrecord.New(st.Peer())
	if err != nil {
		f.Fatal(err)
	}
	sv := savedSession{Addr: netip.MustParseAddrPort("127.0.0.1:40000"), CID: []byte(fuzzCID), Identity: "sensor/dev-1", Last: time.Now().UnixNano(), State: b}
	sum := sha256.Sum256(keys["sensor/dev-1"])
	sv.KeySum = sum[:]
	return sv, client
}

// FuzzDatagram feeds arbitrary datagrams to the DTLS router as if from a few peers, among them
// records of a session in the record layer (seeded with real ones): nothing may panic, and
// whatever they start stays within MaxHandshakes.
func FuzzDatagram(f *testing.F) {
	for _, seed := range [][]byte{
		{},
		{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1},                                  // a ClientHello header, cut short
		{25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 4, 1, 2, 3, 4}, // a CID record
		{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4},                         // application data
		{0x40, 0x02, 0x12, 0x34, 0xb6, 's', 'e', 'n', 's', 'o', 'r'},                       // plain CoAP
	} {
		f.Add(seed, uint8(0))
	}
	hello := clientHello(f)
	f.Add(hello, uint8(1)) // a real ClientHello, so mutations reach the cookie exchange
	sv, client := fuzzSession(f)
	for _, p := range []string{"", "x", string(request(7))} {
		rec, err := client.Seal(nil, dtlsrecord.TypeApplicationData, []byte(p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(rec, uint8(0))
		f.Add(append(rec, rec...), uint8(1)) // two records, the second a replay, from a new port
	}
	// No close_notify seed: it would end the session for the inputs after it.
	s, err := New(Config{Addr: "127.0.0.1:0", PSK: lookup, MaxHandshakes: 8, HandshakeTimeout: 100 * time.Millisecond}, &seen{}, coapserver.Options{}, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		f.Fatal(err)
	}
	peer := func(n uint8) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 40000+uint16(n%4))
	}
	// Its second ClientHello, with the cookie for peer 1: mutations outside the fields the
	// cookie covers reach pion's parser.
	f.Add(withCookie(f, hello, cookieFor(f, s.cookies, hello, peer(1)), 1, 1), uint8(1))
	s.loaded = []savedSession{sv} // restored by Serve into the record layer
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-done
	})
	f.Fuzz(func(t *testing.T, data []byte, p uint8) {
		s.route(data, peer(p), time.Now().UnixNano())
		if _, hs := s.Sessions(); hs > 8 {
			t.Fatalf("%d handshakes in progress, over MaxHandshakes", hs)
		}
	})
}
