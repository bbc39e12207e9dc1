package main

// End-to-end tests of the gateway's lifecycle: a component that dies for real makes the gateway
// not ready, answer 5.03 and exit non-zero.

import (
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
	_ "modernc.org/sqlite"
)

// corruptRegistry breaks the registry file under the running gateway as a failing disk or a
// stray tool would: through SQLite itself (WAL locking keeps it consistent with the gateway's own
// connection), the schema entry of the things table is pointed at a page that does not exist,
// and the schema cookie is bumped so that every connection reloads the schema. Every later write
// to the registry fails with SQLITE_CORRUPT ("database disk image is malformed").
func corruptRegistry(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var v int
	if err := db.QueryRow("PRAGMA schema_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"PRAGMA writable_schema=ON",
		"UPDATE sqlite_master SET rootpage=999999 WHERE type='table' AND name='things'",
		fmt.Sprintf("PRAGMA schema_version=%d", v+1),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func readyz(t *testing.T, g *gw) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + g.http + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestLocalModeStoreFails: the local registry becomes corrupt under a running gateway. The
// processor's next batch fails with an error no retry can fix: /readyz turns 503 at once (with
// the reason), new telemetry gets 5.03 with Max-Age instead of a 2.04 for a record nothing would
// apply, and after --fail-linger the gateway shuts down and exits 1. The record whose batch
// failed was acknowledged before the failure showed; it stays in the spool, undelivered, for the
// next start.
func TestLocalModeStoreFails(t *testing.T) {
	dir := t.TempDir()
	g := startGW(t, dir, "--process", "local", "--fail-linger", "2s")
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if resp, err := c.Post("/sensor/dev-1", `{"temp":1}`); err != nil || resp.Code != coapmsg.Changed {
		t.Fatalf("first POST: %v %+v", err, resp)
	}
	waitFor(t, "dev-1 applied", func() bool { return getJSON(t, g, "/api/things/dev-1", nil) == 200 })

	corruptRegistry(t, filepath.Join(dir, "registry.db"))
	// Stored in the spool before the processor meets the corruption: acknowledged.
	if resp, err := c.Post("/sensor/dev-2", `{"temp":2}`); err != nil || resp.Code != coapmsg.Changed {
		t.Fatalf("POST before the failure shows: %v %+v", err, resp)
	}
	var body string
	waitFor(t, "/readyz 503", func() bool {
		var code int
		code, body = readyz(t, g)
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, `"status":"not ready"`) || !strings.Contains(body, "malformed") {
		t.Fatalf("/readyz after the failure: %s", body)
	}
	resp, err := c.Post("/sensor/dev-3", `{"temp":3}`)
	if err != nil || resp.Code != coapmsg.ServiceUnavailable {
		t.Fatalf("POST after the failure: %v %+v, want 5.03", err, resp)
	}
	if _, ok := resp.Option(coapmsg.MaxAge); !ok {
		t.Fatalf("5.03 without Max-Age: %+v", resp)
	}

	select {
	case err := <-g.done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("exit: %v, want status 1\n%s", err, g.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the gateway did not exit after its processor died\n%s", g.stderr)
	}
	if log := g.stderr.String(); !strings.Contains(log, "a component failed") || !strings.Contains(log, "registry failed for good") {
		t.Fatalf("log does not say what failed:\n%s", log)
	}
	var stored []string
	for _, r := range spoolRecords(t, dir) {
		stored = append(stored, r.ID)
	}
	if strings.Join(stored, ",") != "dev-1,dev-2" {
		t.Fatalf("spool holds %v, want dev-1 and dev-2 (dev-3 was refused)", stored)
	}
	out, err := exec.Command(binPath, "spool", "--waiting", "--data-dir", dir).Output() // not yet delivered
	if err != nil || strings.Contains(string(out), `"id":"dev-1"`) || !strings.Contains(string(out), `"id":"dev-2"`) {
		t.Fatalf("undelivered records: %v\n%s", err, out)
	}
}
