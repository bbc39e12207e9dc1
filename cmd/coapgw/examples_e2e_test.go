package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The device examples under examples/ run against the real gateway here: the Python one
// (aiocoap) and the C one (libcoap, compiled with gcc against Debian's libcoap3-dev).

// exampleLine is one line a device example prints: an exchange, or the last line.
type exampleLine struct {
	T         float64 `json:"t"` // seconds since the device started
	Seq       int     `json:"seq"`
	Type      string  `json:"type"`
	Code      string  `json:"code"`
	MaxAge    *int    `json:"max_age"`
	Done      bool    `json:"done"`
	Confirmed []int   `json:"confirmed"`
}

func (l exampleLine) String() string {
	s := fmt.Sprintf("%.3fs #%d %s %s", l.T, l.Seq, l.Type, l.Code)
	if l.MaxAge != nil {
		s += fmt.Sprintf(" Max-Age %d", *l.MaxAge)
	}
	return s
}

// runExample runs a device example and returns its exchanges and the readings it saw
// confirmed (2.04).
func runExample(t *testing.T, cmd []string) (lines []exampleLine, confirmed []int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	c.Stderr = os.Stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%q: %v\n%s", cmd, err, out)
	}
	done := false
	for l := range strings.Lines(string(out)) {
		var x exampleLine
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatalf("%q printed %q: %v", cmd, l, err)
		}
		if x.Done {
			done, confirmed = true, x.Confirmed
			continue
		}
		lines = append(lines, x)
	}
	if !done {
		t.Fatalf("%q ended without its last line:\n%s", cmd, out)
	}
	return lines, confirmed
}

// storedSeqs returns the "seq" of each record of thing in the gateway's spool.
func storedSeqs(t *testing.T, dataDir, typ, id string) []int {
	t.Helper()
	var seqs []int
	for _, r := range spoolRecords(t, dataDir) {
		if r.Type != typ || r.ID != id {
			continue
		}
		var p struct{ Seq int }
		if err := json.Unmarshal(r.Payload, &p); err != nil {
			t.Fatalf("stored payload %s: %v", r.Payload, err)
		}
		seqs = append(seqs, p.Seq)
	}
	slices.Sort(seqs)
	return seqs
}

// checkDevicePolicy runs a device example (device: its command line without flags) against a
// gateway that lets a device through once every 6 s after a burst of 2 (--device-rate 10,
// --device-burst 2), so that the sending policy of docs/devices.md shows: the first two NONs
// are answered 2.04 (the device listens 2 s for a NON's answer); the next is dropped unanswered
// (a NON over the rate gets no answer); once the oldest unconfirmed reading is a second old the
// device sends CON, gets 5.03 with Max-Age, waits at least that long and sends again until 2.04. The readings the device saw confirmed are exactly
// the ones the gateway stored. A reading to a bad name gets 4.00 and is dropped, not retried.
func checkDevicePolicy(t *testing.T, device []string) {
	dir := t.TempDir()
	g := startGW(t, dir, "--device-rate", "10", "--device-burst", "2")
	gateway := "coap://" + g.coap.String()
	lines, confirmed := runExample(t, append(slices.Clone(device), "--gateway", gateway, "--thing", "sensor/ex-1",
		"--readings", "5", "--interval", "0.1", "--non-deadline", "1", "--listen", "2"))
	t.Logf("exchanges: %v", lines)

	if len(lines) < 2 || lines[0].Type != "NON" || lines[0].Code != "2.04" || lines[1].Type != "NON" || lines[1].Code != "2.04" {
		t.Errorf("the first two readings: %+v, want NON answered 2.04", lines[:min(2, len(lines))])
	}
	unanswered, backedOff := false, false
	for i, l := range lines {
		if l.Type == "NON" && l.Code == "none" {
			unanswered = true
		}
		if l.Type == "CON" && !unanswered {
			t.Errorf("exchange %d is a CON before any NON went unanswered: %+v", i, lines)
		}
		if l.Code == "5.03" {
			if l.Type != "CON" || l.MaxAge == nil || *l.MaxAge < 1 {
				t.Errorf("5.03 without Max-Age or not to a CON: %+v", l)
			}
			if i+1 >= len(lines) || lines[i+1].Seq != l.Seq || lines[i+1].Type != "CON" {
				t.Errorf("after 5.03 the device did not send reading %d again as CON: %+v", l.Seq, lines)
			} else if l.MaxAge != nil && lines[i+1].T-l.T < float64(*l.MaxAge)-0.05 {
				t.Errorf("after 5.03 with Max-Age %d the device sent again %.3f s later", *l.MaxAge, lines[i+1].T-l.T)
			} else {
				backedOff = true
			}
		}
	}
	if !unanswered || !backedOff {
		t.Errorf("want NONs dropped over the rate (%v) and a CON backing off after 5.03 (%v): %+v", unanswered, backedOff, lines)
	}
	if len(confirmed) < 3 {
		t.Errorf("confirmed %v: want the two NONs and the reading sent again after 5.03", confirmed)
	}
	if stored := storedSeqs(t, dir, "sensor", "ex-1"); !slices.Equal(stored, confirmed) {
		t.Errorf("the device saw %v confirmed, the gateway stored %v", confirmed, stored)
	}

	lines, confirmed = runExample(t, append(slices.Clone(device), "--gateway", gateway, "--thing", "sensor/bad id",
		"--readings", "1", "--non-deadline", "0"))
	if len(lines) != 1 || lines[0].Code != "4.00" || len(confirmed) != 0 {
		t.Errorf("a bad name: %+v confirmed %v, want one CON answered 4.00 and dropped", lines, confirmed)
	}
}

// TestExamplePythonDevice: examples/python/device.py (aiocoap) follows the sending policy
// against the real gateway.
func TestExamplePythonDevice(t *testing.T) {
	if err := exec.Command("python3", "-c", "import aiocoap").Run(); err != nil {
		missingPeer(t, "aiocoap (pip install aiocoap)")
	}
	checkDevicePolicy(t, []string{"python3", filepath.Join("..", "..", "examples", "python", "device.py")})
}

// buildCExample compiles examples/libcoap/device.c with gcc against the first libcoap variant
// pkg-config knows of among pkgs, and returns the binary and the variant ("" when none is
// installed).
func buildCExample(t *testing.T, pkgs ...string) (bin, pkg string) {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		missingPeer(t, "gcc")
	}
	for _, p := range pkgs {
		flags, err := exec.Command("pkg-config", "--cflags", "--libs", p).Output()
		if err != nil {
			continue
		}
		bin = filepath.Join(t.TempDir(), "device")
		args := append([]string{"-O2", "-Wall", "-Wextra", "-Werror", "-o", bin, filepath.Join("..", "..", "examples", "libcoap", "device.c")}, strings.Fields(string(flags))...)
		if out, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc %q: %v\n%s", args, err, out)
		}
		return bin, p
	}
	return "", ""
}

// TestExampleCDevice: examples/libcoap/device.c compiles without warnings and follows the
// sending policy against the real gateway; built against a DTLS variant of libcoap (OpenSSL or
// GnuTLS), it also reports over DTLS with a fleet-derived key, and the identity may not write
// another thing (4.03, dropped).
func TestExampleCDevice(t *testing.T) {
	bin, _ := buildCExample(t, "libcoap-3-notls", "libcoap-3-openssl", "libcoap-3-gnutls")
	if bin == "" {
		missingPeer(t, "libcoap's headers (Debian libcoap3-dev) or pkg-config")
	}
	checkDevicePolicy(t, []string{bin})

	bin, pkg := buildCExample(t, "libcoap-3-openssl", "libcoap-3-gnutls")
	if bin == "" {
		missingPeer(t, "a DTLS variant of libcoap (Debian libcoap3-dev has OpenSSL and GnuTLS)")
	}
	t.Logf("DTLS with %s", pkg)
	keyFile := filepath.Join(t.TempDir(), "fleet.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binPath, "device", "key", "--fleet-key-file", keyFile, "sensor/ex-2").Output()
	if err != nil {
		t.Fatalf("coapgw device key: %v", err)
	}
	var psk string
	for l := range strings.Lines(string(out)) {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "psk" {
			psk = f[1]
		}
	}
	dir := t.TempDir()
	coapsAddr := "127.0.0.1:" + strconv.Itoa(freeUDPPort(t))
	startGW(t, dir, "--fleet-key-file", keyFile, "--coaps-addr", coapsAddr)
	gateway := "coaps://" + coapsAddr
	lines, confirmed := runExample(t, []string{bin, "--gateway", gateway, "--thing", "sensor/ex-2", "--identity", "sensor/ex-2",
		"--key-hex", psk, "--readings", "2", "--interval", "0.1", "--non-deadline", "0"})
	if !slices.Equal(confirmed, []int{1, 2}) || len(lines) != 2 {
		t.Errorf("over DTLS: %+v confirmed %v, want both readings confirmed at once", lines, confirmed)
	}
	if stored := storedSeqs(t, dir, "sensor", "ex-2"); !slices.Equal(stored, []int{1, 2}) {
		t.Errorf("over DTLS the gateway stored %v, want [1 2]", stored)
	}
	lines, confirmed = runExample(t, []string{bin, "--gateway", gateway, "--thing", "sensor/ex-3", "--identity", "sensor/ex-2",
		"--key-hex", psk, "--readings", "1", "--non-deadline", "0"})
	if len(lines) != 1 || lines[0].Code != "4.03" || len(confirmed) != 0 {
		t.Errorf("another thing's path over DTLS: %+v confirmed %v, want 4.03 and dropped", lines, confirmed)
	}
}
