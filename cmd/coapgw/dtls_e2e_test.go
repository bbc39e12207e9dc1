package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/httpapitest"
)

// lookPeer finds a test peer's binary, failing under COAPGW_REQUIRE_PEERS and skipping
// otherwise.
func lookPeer(t *testing.T, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		if httpapitest.RequirePeers() {
			t.Fatalf("%s not installed (Debian libcoap3-bin)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return bin
}

// TestDTLSDeviceEndToEnd is the first DTLS message as a user makes it: `coapgw device add`
// gives sensor/dev-1 a key, the gateway (local mode, per-device keys) serves CoAP over DTLS,
// and libcoap's DTLS clients (OpenSSL and GnuTLS builds) post with that identity and key.
// The record is stored; a wrong key stores nothing; the identity may not write another thing
// (4.03); and the credentialed thing can no longer be written over plain CoAP (4.01), while a
// thing without a credential still can (--plain-coap unbound, the default with credentials).
func TestDTLSDeviceEndToEnd(t *testing.T) {
	plain := lookPeer(t, "coap-client-notls")
	clients := []string{lookPeer(t, "coap-client-openssl"), lookPeer(t, "coap-client-gnutls")}

	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "operator.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COAPGW_KEY_FILE", keyFile) // the device CLI and the gateway read it
	for _, dev := range []string{"dev-1", "dev-2"} {
		code, out, errs := device(t, "add", "sensor/"+dev, "--data-dir", dir, "--psk-text", dev+"-secret-key-0")
		if code != 0 {
			t.Fatalf("device add sensor/%s: %d %s %s", dev, code, out, errs)
		}
	}

	coaps := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freeUDPPort(t)))
	g := startGW(t, dir, "--process", "local", "--coaps-addr", coaps.String())
	// The start line reaches the test through a pipe a moment after the gateway turns ready.
	waitFor(t, "the start line naming the DTLS address", func() bool {
		return strings.Contains(g.stderr.String(), "coaps="+coaps.String())
	})

	// run sends one request with a libcoap client; -v 6 makes it log the response's code.
	run := func(bin string, args ...string) string {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, bin, append([]string{"-B", "5", "-v", "6"}, args...)...).CombinedOutput()
		return string(out) // libcoap's clients exit 0 on error answers and failed handshakes alike
	}
	uri := func(path string) string { return "coaps://" + coaps.String() + path }

	for i, bin := range clients {
		name := filepath.Base(bin)
		payload := fmt.Sprintf(`{"n%d":%d}`, i, i+1)
		out := run(bin, "-m", "post", "-e", payload, "-u", "sensor/dev-1", "-k", "dev-1-secret-key-0", uri("/sensor/dev-1"))
		if !strings.Contains(out, "c:2.04") {
			t.Fatalf("%s: POST with the right key did not get 2.04:\n%s", name, out)
		}
		var sh apiShadow
		waitFor(t, name+"'s record in dev-1's shadow", func() bool {
			return getJSON(t, g, "/api/things/dev-1/shadow", &sh) == 200 && sh.State.Reported[fmt.Sprintf("n%d", i)] == float64(i+1)
		})

		out = run(bin, "-m", "post", "-e", `{"wrong":1}`, "-u", "sensor/dev-1", "-k", "not-the-right-key", uri("/sensor/dev-1"))
		if strings.Contains(out, "c:2.04") {
			t.Fatalf("%s: a wrong key got 2.04:\n%s", name, out)
		}

		out = run(bin, "-m", "post", "-e", `{"spoof":1}`, "-u", "sensor/dev-1", "-k", "dev-1-secret-key-0", uri("/sensor/dev-2"))
		if !strings.Contains(out, "c:4.03") {
			t.Fatalf("%s: sensor/dev-1 writing /sensor/dev-2 did not get 4.03:\n%s", name, out)
		}
	}

	// Plain CoAP: refused for the credentialed thing, accepted for one without a credential.
	out, _ := exec.Command(plain, "-m", "post", "-B", "5", "-e", `{"plain":1}`, fmt.Sprintf("coap://%s/sensor/dev-1", g.coap)).CombinedOutput()
	if !strings.Contains(string(out), "4.01") {
		t.Fatalf("plain CoAP to a credentialed thing did not get 4.01: %q", out)
	}
	out, err := exec.Command(plain, "-m", "post", "-B", "5", "-e", `{"plain":1}`, fmt.Sprintf("coap://%s/sensor/dev-9", g.coap)).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("plain CoAP to a thing without a credential: %v %q", err, out)
	}
	var sh9 apiShadow
	waitFor(t, "dev-9's plain record", func() bool {
		return getJSON(t, g, "/api/things/dev-9/shadow", &sh9) == 200 && sh9.State.Reported["plain"] == 1.0
	})

	// Nothing refused reached a shadow.
	var sh1, sh2 apiShadow
	getJSON(t, g, "/api/things/dev-1/shadow", &sh1)
	getJSON(t, g, "/api/things/dev-2/shadow", &sh2)
	for _, k := range []string{"wrong", "spoof", "plain"} {
		if _, ok := sh1.State.Reported[k]; ok {
			t.Errorf("dev-1's shadow holds %q from a refused request: %v", k, sh1.State.Reported)
		}
		if _, ok := sh2.State.Reported[k]; ok {
			t.Errorf("dev-2's shadow holds %q from a refused request: %v", k, sh2.State.Reported)
		}
	}
	if err := g.stop(15); err != nil { // SIGTERM
		t.Fatalf("gateway exit: %v\n%s", err, g.stderr)
	}
}

// TestPlainCoAPOff: with --plain-coap off the gateway opens no plain CoAP port at all (only DTLS),
// says so at start, and a plain request gets nothing back.
func TestPlainCoAPOff(t *testing.T) {
	plain := lookPeer(t, "coap-client-notls")
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "operator.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("a5", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COAPGW_KEY_FILE", keyFile)
	if code, out, errs := device(t, "add", "sensor/dev-1", "--data-dir", dir); code != 0 {
		t.Fatalf("device add: %d %s %s", code, out, errs)
	}
	coaps := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freeUDPPort(t)))
	g := startGW(t, dir, "--process", "local", "--coaps-addr", coaps.String(), "--plain-coap", "off")
	waitFor(t, "the start line saying coaps="+coaps.String(), func() bool {
		return strings.Contains(g.stderr.String(), "coaps="+coaps.String())
	})
	if log := g.stderr.String(); !strings.Contains(log, "coap=off") {
		t.Fatalf("the start line does not say plain CoAP is off:\n%s", log)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, plain, "-m", "post", "-B", "3", "-e", `{"plain":1}`, fmt.Sprintf("coap://%s/sensor/dev-9", g.coap)).CombinedOutput()
	if strings.Contains(string(out), "2.04") || strings.Contains(string(out), "4.01") {
		t.Fatalf("a plain request was answered with --plain-coap off: %q", out)
	}
	var sh apiShadow
	if code := getJSON(t, g, "/api/things/dev-9/shadow", &sh); code == 200 {
		t.Fatalf("dev-9 was stored from plain CoAP: %+v", sh)
	}
}
