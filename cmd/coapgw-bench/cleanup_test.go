package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCleanUpAgainstGateway: the real gateway (built from ../coapgw, local mode, with an API
// token); a run with --clean-up leaves no thing of type bench named bench-* behind, and a thing
// of another type whose name has the same prefix stays. Without the token the clean-up is
// refused with a message and exit 1.
func TestCleanUpAgainstGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "coapgw")
	if out, err := exec.Command("go", "build", "-o", bin, "../coapgw").CombinedOutput(); err != nil {
		t.Fatalf("build the gateway: %v\n%s", err, out)
	}
	const token = "bench-clean-up-token-0123456789ab"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	coapAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var log strings.Builder
	gw := exec.Command(bin, "serve", "--data-dir", filepath.Join(dir, "data"), "--process", "local",
		"--coap-addr", coapAddr, "--http-addr", httpAddr, "--http-token-file", tokenFile)
	gw.Stderr = &log
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = gw.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = gw.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = gw.Process.Kill()
			<-done
		}
	})
	api := "http://" + httpAddr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(api + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A thing of another type with the bench prefix: the clean-up must not touch it.
	if out, err := exec.Command(bin, "send", "coap://"+coapAddr+"/sensor/bench-keep", `{"temp":1}`).CombinedOutput(); err != nil {
		t.Fatalf("send sensor/bench-keep: %v\n%s", err, out)
	}

	total := func(typ string) int64 {
		t.Helper()
		resp, err := http.Get(api + "/api/things?type=" + typ + "&prefix=bench-")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var page struct {
			Total int64 `json:"total"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /api/things?type=%s: %d %v", typ, resp.StatusCode, err)
		}
		return page.Total
	}

	// Without a token: the run is measured, the clean-up refused with a message, exit 1.
	t.Setenv("COAPGW_HTTP_TOKEN", "")
	code, _, stderr := runCmd(t, short(coapAddr, "--clean-up", api)...)
	if code != 1 || !strings.Contains(stderr, "needs the gateway's HTTP API token") {
		t.Fatalf("clean-up without a token: exit %d, stderr %q", code, stderr)
	}
	if n := total("bench"); n != 4 {
		t.Fatalf("things of type bench after the refused clean-up: %d, want the run's 4", n)
	}

	code, _, stderr = runCmd(t, short(coapAddr, "--clean-up", api, "--api-token-file", tokenFile)...)
	if code != 0 || !strings.Contains(stderr, "deleted 4 things of type bench named bench-*") {
		t.Fatalf("clean-up: exit %d, stderr %q\ngateway:\n%s", code, stderr, log.String())
	}
	if n := total("bench"); n != 0 {
		t.Errorf("things of type bench after the clean-up: %d, want 0", n)
	}
	if n := total("sensor"); n != 1 {
		t.Errorf("sensor/bench-keep after the clean-up: %d things, want 1", n)
	}

	if code, _, stderr := runCmd(t, "--target", coapAddr, "--path", "/example_data", "--clean-up", api); code != 2 || !strings.Contains(stderr, "cannot be used with --path") {
		t.Errorf("--clean-up with --path: exit %d, stderr %q", code, stderr)
	}
}
