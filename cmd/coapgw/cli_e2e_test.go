package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// coapgw runs the built binary with args and returns its exit status and output.
func coapgw(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil && exitCode(err) < 0 {
		t.Fatalf("coapgw %q: %v", args, err)
	}
	return exitCode(err), out.String(), errb.String()
}

// TestVersion: --version and -version print the version and exit 0 (--version used to be an
// unknown serve flag: usage text and exit 2); `coapgw version` prints that line, the commit and
// the Go version.
func TestVersion(t *testing.T) {
	for _, arg := range []string{"--version", "-version"} {
		code, out, errs := coapgw(t, arg)
		if code != 0 || !regexp.MustCompile(`^coapgw \S+\n$`).MatchString(out) || errs != "" {
			t.Errorf("coapgw %s: exit %d, stdout %q, stderr %.200q; want 0 and \"coapgw <version>\"", arg, code, out, errs)
		}
	}
	code, out, errs := coapgw(t, "version")
	if code != 0 || !regexp.MustCompile(`^coapgw \S+\ncommit \S+\ngo go\S+ \w+/\w+\n$`).MatchString(out) || errs != "" {
		t.Errorf("coapgw version: exit %d, stdout %q, stderr %.200q; want 0 and the version, commit and go lines", code, out, errs)
	}
}

// TestVersionFromLdflags: the version and commit -ldflags -X sets (as make build, make release
// and the Dockerfile do) are what --version and version print, what the start line logs, and
// the labels of coapgw_build_info on /metrics.
func TestVersionFromLdflags(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "coapgw")
	ld := "-X github.com/coapgw/coapgw/internal/gateway.Version=v9.8.7-test -X github.com/coapgw/coapgw/internal/gateway.Commit=0123456789abcdef"
	if out, err := exec.Command("go", "build", "-ldflags", ld, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || string(out) != "coapgw v9.8.7-test\n" {
		t.Fatalf("--version: %v %q", err, out)
	}
	out, err = exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "coapgw v9.8.7-test\ncommit 0123456789abcdef\ngo "+runtime.Version()+" ") {
		t.Fatalf("version: %v %q", err, out)
	}
	metrics := scrape(t, startBinGW(t, bin, t.TempDir(), 0))
	want := `coapgw_build_info{commit="0123456789abcdef",goversion="` + runtime.Version() + `",version="v9.8.7-test"} 1`
	if !strings.Contains(metrics, want+"\n") {
		t.Errorf("/metrics lacks %s:\n%s", want, grepLines(metrics, "build_info"))
	}
}

// TestVersionFromBuildInfo: without -ldflags, the module version or the VCS revision the Go
// toolchain records names the build.
func TestVersionFromBuildInfo(t *testing.T) {
	for _, tc := range []struct {
		bi   debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{Main: debug.Module{Version: "v0.5.0"}}, "v0.5.0"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "false"}}}, "devel+0123456789ab"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}, "devel+0123456789ab+dirty"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
	} {
		if got := versionFromBuildInfo(&tc.bi); got != tc.want {
			t.Errorf("versionFromBuildInfo(%+v) = %q, want %q", tc.bi, got, tc.want)
		}
	}
}

// TestHelp: --help, -h and help list the commands and serve's flags on stdout and exit 0 (it
// used to show the serve flags only, and the commands only under `coapgw help`).
func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "-help", "help"} {
		code, out, _ := coapgw(t, arg)
		if code != 0 {
			t.Errorf("coapgw %s: exit %d", arg, code)
		}
		for _, want := range []string{"serve ", "send ", "spool ", "process ", "device ", "version ", "-coap-addr", "-data-dir"} {
			if !strings.Contains(out, want) {
				t.Errorf("coapgw %s: stdout lacks %q:\n%.400s", arg, want, out)
			}
		}
	}
}

// TestSubcommandHelp: every command's -h exits 0 (spool -h used to exit 2) and prints usage.
func TestSubcommandHelp(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "-h"}, {"serve", "--help"}, {"spool", "-h"}, {"spool", "--help"}, {"process", "-h"},
		{"device", "-h"}, {"device", "add", "-h"}, {"device", "list", "-h"}, {"send", "-h"}, {"send", "--help"},
	} {
		code, out, errs := coapgw(t, args...)
		if code != 0 || !strings.Contains(out+errs, "usage") && !strings.Contains(out+errs, "Usage") {
			t.Errorf("coapgw %q: exit %d, output %.300q", args, code, out+errs)
		}
	}
	if code, _, _ := coapgw(t, "spool", "--bogus"); code != 2 {
		t.Errorf("spool --bogus: exit %d, want 2", code)
	}
	if code, _, _ := coapgw(t, "nonsense"); code != 2 {
		t.Errorf("an unknown command: exit %d, want 2", code)
	}
}

// TestFlagDefaultsOnce: serve -h names each flag's type (duration, size, int, string) rather
// than "value", and says every default once (the gateway id said it twice).
func TestFlagDefaultsOnce(t *testing.T) {
	for _, cmd := range []string{"serve", "send", "spool", "process"} {
		_, out, errs := coapgw(t, cmd, "-h")
		lines := strings.Split(out+errs, "\n")
		for i, l := range lines {
			if strings.Count(l, "(default") > 1 {
				t.Errorf("%s -h: a default said twice: %s / %s", cmd, lines[max(i-1, 0)], l)
			}
		}
	}
	_, _, errs := coapgw(t, "serve", "-h")
	if strings.Contains(errs, "(default: hostname)") {
		t.Errorf("serve -h: the gateway id's default said in its help and by the flag package")
	}
	for _, want := range []string{"-retry-after duration", "-socket-buffer size", "-coap-sockets int", "-data-dir string", "-gateway-id string"} {
		if !strings.Contains(errs, want) {
			t.Errorf("serve -h lacks %q", want)
		}
	}
	if strings.Contains(errs, " value\n") {
		t.Errorf("a flag's type prints as value:\n%s", errs)
	}
}

// TestFirstMessageWithSend is the README's first message with coapgw send: the device gets
// 2.04, the record is applied, and `coapgw spool` then prints the stored record (it used to
// print none, and "2 already forwarded" in local mode, where nothing is forwarded).
func TestFirstMessageWithSend(t *testing.T) {
	dir := t.TempDir()
	g := startGW(t, dir, "--process", "local")
	uri := "coap://" + g.coap.String() + "/sensor/dev-1"

	code, out, errs := coapgw(t, "send", uri, `{"temp":21.5}`)
	if code != 0 || out != "2.04 Changed\n" {
		t.Fatalf("send: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	var sh apiShadow
	waitFor(t, "the record in the shadow", func() bool {
		return getJSON(t, g, "/api/things/dev-1/shadow", &sh) == 200 && sh.State.Reported["temp"] == 21.5
	})
	code, out, errs = coapgw(t, "spool", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("spool: exit %d %s", code, errs)
	}
	var rec struct {
		Seq     uint64          `json:"seq"`
		State   string          `json:"state"`
		Type    string          `json:"type"`
		ID      string          `json:"id"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil || rec.Type != "sensor" || rec.ID != "dev-1" || string(rec.Payload) != `{"temp":21.5}` || rec.State != "done" {
		t.Fatalf("spool printed %q (%v), want the stored record, done", out, err)
	}
	if !strings.Contains(errs, "1 records on disk") || !strings.Contains(errs, "0 waiting, 1 done") || strings.Contains(errs, "already forwarded") {
		t.Errorf("spool's summary: %q", errs)
	}
	code, out, _ = coapgw(t, "spool", "--waiting", "--data-dir", dir)
	if code != 0 || out != "" {
		t.Errorf("spool --waiting: exit %d, printed %q; want nothing waiting", code, out)
	}
}

// TestSendPlain: coapgw send over plain CoAP against the real gateway: CON and NON, text and
// JSON output, an error answer (exit 1, code and diagnostic printed), GET, and a silent port.
func TestSendPlain(t *testing.T) {
	dir := t.TempDir()
	g := startGW(t, dir)
	base := "coap://" + g.coap.String()

	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		stdout   string // a regexp
		stderrRe string
	}{
		{"CON", []string{base + "/sensor/dev-1", `{"temp":21.5}`}, 0, `^2\.04 Changed\n$`, ""},
		{"NON", []string{"--non", base + "/sensor/dev-2", `{"temp":1}`}, 0, `^2\.04 Changed\n$`, ""},
		{"flags after the URI", []string{base + "/sensor/dev-3", `{"temp":3}`, "--format", "json"}, 0, `^\{"code":"2\.04","status":"Changed"\}\n$`, ""},
		{"PUT", []string{"--method", "put", base + "/sensor/dev-4", `{"temp":4}`}, 0, `^2\.04 Changed\n$`, ""},
		{"XML is refused", []string{"--content-format", "41", base + "/sensor/dev-5", `{}`}, 1, `^4\.15 Unsupported Content-Format\n`, ""},
		{"no Content-Format", []string{"--content-format", "none", base + "/sensor/dev-5", `{"temp":5}`}, 0, `^2\.04 Changed\n$`, ""},
		{"bad Content-Format", []string{"--content-format", "json", base + "/sensor/dev-5", `{}`}, 2, `^$`, "--content-format"},
		{"bad JSON", []string{base + "/sensor/dev-1", `{"temp":`}, 1, `^4\.00 Bad Request\ninvalid JSON`, ""},
		{"bad JSON, NON", []string{"--non", "--format", "json", base + "/sensor/dev-1", `[1]`}, 1, `^\{"code":"4\.00","status":"Bad Request","payload_text":".+"\}\n$`, ""},
		{"bad name", []string{base + "/sensor/dev 1", `{}`}, 1, `^4\.00 Bad Request\n`, ""},
		{"health", []string{"--format", "json", base + "/health"}, 0, `^\{"code":"2\.05","status":"Content","content_format":50,"payload":\{"status":"ok"`, ""},
		{"no URI", nil, 2, `^$`, "usage: coapgw send"},
		{"http URI", []string{"http://127.0.0.1/a/b", "{}"}, 2, `^$`, "coap:// or coaps://"},
		{"DTLS without a key", []string{"coaps://127.0.0.1/a/b", "{}"}, 2, `^$`, "--psk-hex or --psk-text"},
		{"nothing listens", []string{"--timeout", "3s", fmt.Sprintf("coap://127.0.0.1:%d/a/b", freeUDPPort(t)), "{}"}, 1, `^$`, "coapgw send: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := coapgw(t, append([]string{"send"}, tc.args...)...)
			if code != tc.code || !regexp.MustCompile(tc.stdout).MatchString(out) || !strings.Contains(errs, tc.stderrRe) {
				t.Fatalf("send %q: exit %d, stdout %q, stderr %q; want %d, %s, %q", tc.args, code, out, errs, tc.code, tc.stdout, tc.stderrRe)
			}
		})
	}
	var ids []string
	for _, r := range spoolRecords(t, dir) {
		ids = append(ids, r.ID)
	}
	if got := strings.Join(ids, ","); got != "dev-1,dev-2,dev-3,dev-4,dev-5" {
		t.Fatalf("spool holds %s, want each 2.04'd record once", got)
	}
}

// TestSendDTLS: coapgw send over DTLS with the key `coapgw device add` printed, against the
// real gateway; a wrong key fails the handshake (exit 1, nothing stored).
func TestSendDTLS(t *testing.T) {
	deviceEnv(t)
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "operator.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COAPGW_KEY_FILE", keyFile)
	code, out, errs := device(t, "add", "sensor/dev-1", "--data-dir", dir)
	m := pskLine.FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("device add: %d %q %q", code, out, errs)
	}
	pskHex, pskText := m[2], m[3]

	coaps := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freeUDPPort(t)))
	startGW(t, dir, "--process", "local", "--coaps-addr", coaps.String())
	uri := "coaps://" + coaps.String() + "/sensor/dev-1"

	if code, out, errs := coapgw(t, "send", "--psk-hex", pskHex, uri, `{"temp":1}`); code != 0 || out != "2.04 Changed\n" {
		t.Fatalf("send --psk-hex: exit %d %q %q", code, out, errs)
	}
	if code, out, errs := coapgw(t, "send", "--non", "--identity", "sensor/dev-1", "--psk-text", pskText, uri, `{"temp":2}`); code != 0 || out != "2.04 Changed\n" {
		t.Fatalf("send --non --psk-text: exit %d %q %q", code, out, errs)
	}
	// Another thing's path over dev-1's session: 4.03.
	other := "coaps://" + coaps.String() + "/sensor/dev-2"
	if code, out, _ := coapgw(t, "send", "--identity", "sensor/dev-1", "--psk-text", pskText, other, `{"temp":3}`); code != 1 || !strings.HasPrefix(out, "4.03 Forbidden\n") {
		t.Fatalf("another thing's path: exit %d %q", code, out)
	}
	code, out, errs = coapgw(t, "send", "--timeout", "3s", "--psk-text", "not-the-right-key-at-all", uri, `{"temp":4}`)
	if code != 1 || out != "" || !strings.Contains(errs, "dtls handshake as sensor/dev-1") {
		t.Fatalf("a wrong key: exit %d %q %q", code, out, errs)
	}
	var payloads []string
	for _, r := range spoolRecords(t, dir) {
		payloads = append(payloads, string(r.Payload))
	}
	if got := strings.Join(payloads, ","); got != `{"temp":1},{"temp":2}` {
		t.Fatalf("spool holds %s", got)
	}
}
