package loadgen

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// hkdfRFC5869 is HKDF-SHA256 written out from RFC 5869 (salt nil = HashLen zeros, one block),
// independent of crypto/hkdf, so DevicePSK is checked against the definition.
func hkdfRFC5869(secret []byte, info string, n int) []byte {
	ext := hmac.New(sha256.New, make([]byte, sha256.Size))
	ext.Write(secret)
	prk := ext.Sum(nil)
	exp := hmac.New(sha256.New, prk)
	exp.Write([]byte(info))
	exp.Write([]byte{1})
	return exp.Sum(nil)[:n]
}

var testMaster = bytes.Repeat([]byte{0x42}, 32)

// seq is the bytes 0, 1, ..., n-1.
func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func TestDevicePSK(t *testing.T) {
	k, err := DevicePSK(testMaster, "sensor/dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if want := hkdfRFC5869(testMaster, "coapgw psk v1 sensor/dev-1", 16); !bytes.Equal(k, want) {
		t.Errorf("DevicePSK = %x, want %x", k, want)
	}
	// Vectors from Python's hmac module (an implementation of its own):
	//	def hkdf(ikm, info, L):
	//	    prk = hmac.new(bytes(32), ikm, "sha256").digest()
	//	    return hmac.new(prk, info + b"\x01", "sha256").digest()[:L]
	for _, v := range []struct{ master, id, want string }{
		{string(seq(32)), "sensor/dev-1", "8202651b31e2d484afd41da80719ef13"},
		{"0123456789abcdef", "sensor/dev-2", "16242e1b26fd85269e3e310750c7df28"},
	} {
		if k, _ := DevicePSK([]byte(v.master), v.id); hex.EncodeToString(k) != v.want {
			t.Errorf("DevicePSK(%x, %s) = %x, want %s", v.master, v.id, k, v.want)
		}
	}
	k2, _ := DevicePSK(testMaster, "sensor/dev-2")
	if len(k) != 16 || bytes.Equal(k, k2) {
		t.Errorf("keys of dev-1 %x and dev-2 %x: want 16 distinct bytes", k, k2)
	}
}

func TestValidateDTLS(t *testing.T) {
	for _, c := range []struct {
		name string
		set  func(*Config)
		want string // "" for valid
	}{
		{"psk", func(c *Config) { c.PSK = "secretkey" }, ""},
		{"psk-hex gcm", func(c *Config) { c.PSKHex, c.DTLSCipher = "00ff", "gcm" }, ""},
		{"fleet", func(c *Config) { c.FleetKeyHex = hex.EncodeToString(testMaster) }, ""},
		{"no key", func(*Config) {}, "exactly one of psk"},
		{"two keys", func(c *Config) { c.PSK, c.PSKHex = "a", "00" }, "exactly one of psk"},
		{"bad hex", func(c *Config) { c.PSKHex = "zz" }, "psk-hex"},
		{"short master", func(c *Config) { c.FleetKeyHex = "0011" }, "at least 16 bytes"},
		{"cipher", func(c *Config) { c.PSK, c.DTLSCipher = "a", "chacha" }, "dtls-cipher"},
		{"concurrency", func(c *Config) { c.PSK, c.HandshakeConcurrency = "a", 0 }, "handshake-concurrency"},
		{"timeout", func(c *Config) { c.PSK, c.HandshakeTimeout = "a", 0 }, "handshake-timeout"},
	} {
		cfg := DefaultConfig()
		cfg.DTLS = true
		c.set(&cfg)
		err := cfg.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	cfg := DefaultConfig()
	cfg.PSK = "secretkey"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "need --dtls") {
		t.Errorf("psk without dtls: error %v", err)
	}
}

// dtlsResponder is a real DTLS 1.2 PSK server (pion) on 127.0.0.1: it derives each identity's key
// from its own fleet master key, answers every CON request with a piggybacked 2.04, and records
// for every session its identity and the request paths it saw.
type dtlsResponder struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []*dtls.Conn
	seen  map[string]map[string]int // identity → "POST /bench/bench-0" → count
	bad   []string
}

func startDTLSResponder(t *testing.T, master []byte, suites ...dtls.CipherSuiteID) *dtlsResponder {
	t.Helper()
	r := &dtlsResponder{seen: map[string]map[string]int{}}
	ln, err := dtls.ListenWithOptions("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)},
		dtls.WithPSK(func(id []byte) ([]byte, error) { return hkdfRFC5869(master, "coapgw psk v1 "+string(id), 16), nil }),
		dtls.WithPSKIdentityHint(nil),
		dtls.WithCipherSuites(suites...),
		dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(8)),
		dtls.WithLoggerFactory(quietLogs),
	)
	if err != nil {
		t.Fatal(err)
	}
	r.ln = ln
	r.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns = append(r.conns, c.(*dtls.Conn))
			r.mu.Unlock()
			r.wg.Go(func() { r.serve(c.(*dtls.Conn)) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, s := range r.bad {
			t.Error(s)
		}
	})
	return r
}

func (r *dtlsResponder) addr() string { return r.ln.Addr().String() }

func (r *dtlsResponder) serve(c *dtls.Conn) {
	defer c.Close()
	buf := make([]byte, 2048)
	var m coapmsg.Message
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		st, _ := c.ConnectionState()
		id := string(st.IdentityHint)
		if err := m.Decode(buf[:n]); err != nil || m.Type != coapmsg.Confirmable {
			r.mu.Lock()
			r.bad = append(r.bad, "not a CON request")
			r.mu.Unlock()
			continue
		}
		var path strings.Builder
		for _, o := range m.Options {
			if o.Number == coapmsg.URIPath {
				path.WriteString("/" + string(o.Value))
			}
		}
		r.mu.Lock()
		if r.seen[id] == nil {
			r.seen[id] = map[string]int{}
		}
		method := m.Code.String()
		if m.Code == coapmsg.POST {
			method = "POST"
		}
		r.seen[id][method+" "+path.String()]++
		r.mu.Unlock()
		out := coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Changed, MID: m.MID, Token: m.Token}
		b, _ := out.Append(nil)
		if _, err := c.Write(b); err != nil {
			return
		}
	}
}

func dtlsConfig(addr string) Config {
	cfg := testConfig(addr)
	cfg.Devices = 4
	cfg.DTLS = true
	cfg.FleetKeyHex = hex.EncodeToString(testMaster)
	cfg.HandshakeConcurrency = 2
	cfg.HandshakeTimeout = 3 * time.Second
	return cfg
}

// TestDTLSFleet: with the fleet master key the server also has, every device completes a real
// handshake as {type}/{id-prefix}{n} with its own derived key, and sends POST
// /{type}/{id-prefix}{n} over that session only; every request is answered 2.04.
func TestDTLSFleet(t *testing.T) {
	r := startDTLSResponder(t, testMaster, dtls.TLS_PSK_WITH_AES_128_CCM_8)
	cfg := dtlsConfig(r.addr())
	res := run(t, cfg)
	var text bytes.Buffer
	res.WriteText(&text)
	for _, want := range []string{"CON over DTLS TLS_PSK_WITH_AES_128_CCM_8, 4 devices", "handshakes/s", "(4 established, 0 failed in", "handshake lat  p50"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	d := res.DTLS
	if d == nil || d.Handshakes != 4 || d.Failures != 0 || d.Keys != "fleet" || d.CipherSuite != "TLS_PSK_WITH_AES_128_CCM_8" {
		t.Fatalf("handshake phase %+v", d)
	}
	if d.HandshakesPerSec <= 0 || d.Latency.Count != 4 || d.LoadgenRSSKiB == 0 {
		t.Errorf("handshakes/s %v, latency samples %d, load generator RSS %d KiB", d.HandshakesPerSec, d.Latency.Count, d.LoadgenRSSKiB)
	}
	if res.Delivered == 0 || res.Codes["2.04"] != res.Delivered || len(res.Codes) != 1 || res.Lost != 0 || res.RecvErrors != 0 {
		t.Errorf("message phase: delivered %d, codes %v, lost %d, receive errors %d", res.Delivered, res.Codes, res.Lost, res.RecvErrors)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) != 4 {
		t.Errorf("sessions %v, want 4 identities", r.seen)
	}
	for i := range 4 {
		id := fmt.Sprintf("bench/bench-%d", i)
		if got := r.seen[id]; len(got) != 1 || got["POST /"+id] == 0 {
			t.Errorf("session %s sent %v, want POST /%s only", id, got, id)
		}
	}
}

// TestDTLSGCMFixedKey: --dtls-cipher gcm negotiates TLS_PSK_WITH_AES_128_GCM_SHA256 with a server
// that offers only that suite; one fixed key (--psk-hex) for all works when it is the key the
// server has for each identity.
func TestDTLSGCMFixedKey(t *testing.T) {
	r := startDTLSResponder(t, testMaster, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256)
	cfg := dtlsConfig(r.addr())
	cfg.Devices = 1
	cfg.FleetKeyHex, cfg.PSKHex = "", hex.EncodeToString(hkdfRFC5869(testMaster, "coapgw psk v1 bench/bench-0", 16))
	cfg.DTLSCipher = "gcm"
	res := run(t, cfg)
	if d := res.DTLS; d.Handshakes != 1 || d.Keys != "fixed" || d.CipherSuite != "TLS_PSK_WITH_AES_128_GCM_SHA256" {
		t.Errorf("handshake phase %+v", d)
	}
	if res.Delivered == 0 {
		t.Error("nothing delivered over GCM")
	}
}

// TestDTLSWrongKey: devices whose key the server does not share fail their handshakes; they are
// counted with their error and no message is sent.
func TestDTLSWrongKey(t *testing.T) {
	r := startDTLSResponder(t, testMaster, dtls.TLS_PSK_WITH_AES_128_CCM_8)
	cfg := dtlsConfig(r.addr())
	cfg.FleetKeyHex = hex.EncodeToString(bytes.Repeat([]byte{7}, 32))
	cfg.HandshakeConcurrency, cfg.HandshakeTimeout = 4, 1500*time.Millisecond
	res := run(t, cfg)
	d := res.DTLS
	if d.Handshakes != 0 || d.Failures != 4 || len(d.Errors) == 0 {
		t.Errorf("handshake phase %+v, want 4 failures with their errors", d)
	}
	if res.Sent != 0 || res.Delivered != 0 || len(res.Warnings) == 0 {
		t.Errorf("sent %d, delivered %d, warnings %q; want nothing sent and a warning", res.Sent, res.Delivered, res.Warnings)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) != 0 {
		t.Errorf("server got requests %v", r.seen)
	}
}

// cidProxy relays UDP between clients and a server, one upstream socket per client, and counts
// the client datagrams that start with a tls12_cid record (content type 25, RFC 9146).
type cidProxy struct {
	conn     *net.UDPConn
	upstream *net.UDPAddr
	wg       sync.WaitGroup
	mu       sync.Mutex
	peers    map[string]*net.UDPConn
	cid      int
}

func startCIDProxy(t *testing.T, upstream string) *cidProxy {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.ResolveUDPAddr("udp4", upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &cidProxy{conn: conn, upstream: up, peers: map[string]*net.UDPConn{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		conn.Close()
		p.mu.Lock()
		for _, u := range p.peers {
			u.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *cidProxy) serve() {
	buf := make([]byte, 65536)
	for {
		n, from, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		if n > 0 && buf[0] == 25 {
			p.cid++
		}
		u := p.peers[from.String()]
		if u == nil {
			if u, err = net.DialUDP("udp4", nil, p.upstream); err != nil {
				p.mu.Unlock()
				return
			}
			p.peers[from.String()] = u
			p.wg.Go(func() {
				b := make([]byte, 65536)
				for {
					n, err := u.Read(b)
					if err != nil {
						return
					}
					p.conn.WriteToUDP(b[:n], from)
				}
			})
		}
		p.mu.Unlock()
		u.Write(buf[:n])
	}
}

// TestDTLSConnectionID: against a server that issues Connection IDs, the devices send their
// requests in tls12_cid records (RFC 9146) carrying the server's ID.
func TestDTLSConnectionID(t *testing.T) {
	r := startDTLSResponder(t, testMaster, dtls.TLS_PSK_WITH_AES_128_CCM_8)
	p := startCIDProxy(t, r.addr())
	cfg := dtlsConfig(p.conn.LocalAddr().String())
	res := run(t, cfg)
	if res.DTLS.Handshakes != 4 || res.Delivered == 0 {
		t.Fatalf("handshakes %d, delivered %d", res.DTLS.Handshakes, res.Delivered)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if uint64(p.cid) < res.Delivered {
		t.Errorf("%d datagrams with a CID record for %d delivered requests, want at least one each", p.cid, res.Delivered)
	}
}
