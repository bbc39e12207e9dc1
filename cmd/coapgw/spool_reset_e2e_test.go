package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
)

// TestLocalModeSpoolDeleted: the operator stops the gateway, deletes <data-dir>/spool and keeps
// the registry. The new spool must not hand out sequence numbers at or below the registry's
// high-water mark for the gateway: every record acknowledged after the restart is applied, none is
// taken for a duplicate of a record of the deleted spool, also when a gateway with --process none
// filled the new spool.
func TestLocalModeSpoolDeleted(t *testing.T) {
	dir := t.TempDir()
	const n = 20
	// post sends n records to dev-1, each setting a property named prefix+i, all acknowledged.
	post := func(g *gw, prefix string) {
		t.Helper()
		c, err := coaptest.Dial(g.coap)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := range n {
			resp, err := c.Post("/sensor/dev-1", fmt.Sprintf(`{"%s%d":%d}`, prefix, i, i))
			if err != nil || resp.Code != coapmsg.Changed {
				t.Fatalf("post %s%d: %v %v", prefix, i, resp, err)
			}
		}
	}
	// applied waits until dev-1 has want messages and its shadow holds every property named
	// prefix+i.
	applied := func(g *gw, want int64, prefix string) {
		t.Helper()
		var th apiThing
		waitFor(t, fmt.Sprintf("dev-1 with %d applied messages", want), func() bool {
			return getJSON(t, g, "/api/things/dev-1", &th) == 200 && th.Messages >= want
		})
		if th.Messages != want {
			t.Fatalf("dev-1 has %d messages, want %d", th.Messages, want)
		}
		var sh apiShadow
		if code := getJSON(t, g, "/api/things/dev-1/shadow", &sh); code != 200 {
			t.Fatalf("shadow: %d", code)
		}
		for i := range n {
			if v := sh.State.Reported[fmt.Sprintf("%s%d", prefix, i)]; v != float64(i) {
				t.Fatalf("shadow property %s%d = %v, want %d; reported %v", prefix, i, v, i, sh.State.Reported)
			}
		}
	}

	g := startGW(t, dir, "--process", "local")
	post(g, "a")
	applied(g, n, "a")
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}

	if err := os.RemoveAll(filepath.Join(dir, "spool")); err != nil {
		t.Fatal(err)
	}
	g = startGW(t, dir, "--process", "local")
	post(g, "b")
	applied(g, 2*n, "b")
	if !strings.Contains(g.stderr.String(), "high-water mark") {
		t.Errorf("the raised sequence was not logged:\n%s", g.stderr)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}

	// A plain restart (spool kept) continues as before and logs nothing about the mark.
	g = startGW(t, dir, "--process", "local")
	post(g, "c")
	applied(g, 3*n, "c")
	if strings.Contains(g.stderr.String(), "high-water mark") {
		t.Errorf("sequence raised on a restart that kept the spool:\n%s", g.stderr)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}

	// The spool is deleted again and refilled by a gateway that does not process (--process
	// none); local mode applies what it stored when it runs again.
	if err := os.RemoveAll(filepath.Join(dir, "spool")); err != nil {
		t.Fatal(err)
	}
	g = startGW(t, dir)
	post(g, "d")
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
	g = startGW(t, dir, "--process", "local")
	applied(g, 4*n, "d")
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
}
