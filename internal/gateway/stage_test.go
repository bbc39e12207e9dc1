package gateway

import (
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// readyz returns /readyz's status code and reason.
func readyz(t *testing.T, g *Gateway) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + g.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Reason string `json:"reason"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body.Reason
}

// TestReadyzWhileProcessorFails (issue 11): the local registry cannot be written (another
// connection holds its write lock): once the processor is further behind than --ready-max-lag,
// /readyz answers 503 saying the registry is failing and how far behind, while devices keep
// getting 2.04 (the spool takes their records); when the lock goes, the processor catches up
// and /readyz answers 200 again.
func TestReadyzWhileProcessorFails(t *testing.T) {
	cfg := testConfig(t)
	cfg.CoAP.ReadyMaxLag = time.Second
	cfg.Local.BackoffMax = 200 * time.Millisecond
	g, _, _ := start(t, cfg)
	if resp := post(t, g, "/sensor/dev-1", `{"v":1}`); resp.Code != coapmsg.Changed {
		t.Fatalf("POST %v", resp.Code)
	}
	for g.local.proc.Stats().Applied == 0 {
		time.Sleep(time.Millisecond)
	}
	if code, reason := readyz(t, g); code != http.StatusOK {
		t.Fatalf("/readyz %d %q before the registry was locked", code, reason)
	}

	db, err := sql.Open("sqlite", "file:"+filepath.Join(cfg.Spool.DataDir, "registry.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	locked := true
	unlock := func() {
		if locked {
			conn.ExecContext(ctx, "ROLLBACK")
			conn.Close()
			locked = false
		}
	}
	defer unlock()

	var reason string
	for deadline := time.Now().Add(30 * time.Second); ; {
		if resp := post(t, g, "/sensor/dev-1", `{"v":2}`); resp.Code != coapmsg.Changed {
			t.Fatalf("POST while the registry is locked: %v, want 2.04 (the spool takes it)", resp.Code)
		}
		var code int
		if code, reason = readyz(t, g); code == http.StatusServiceUnavailable && strings.Contains(reason, "registry failing") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz %d %q 30 s after the registry was locked, want 503 registry failing", code, reason)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(reason, "processor") || !strings.Contains(reason, "behind (ready-max-lag 1s)") || !strings.Contains(reason, "records in the spool") {
		t.Errorf("reason %q, want how far behind the processor is and the spool's backlog", reason)
	}

	unlock()
	for deadline := time.Now().Add(30 * time.Second); ; {
		code, reason := readyz(t, g)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz %d %q 30 s after the registry was unlocked", code, reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for deadline := time.Now().Add(10 * time.Second); g.spool.Stats().Depth != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("spool depth %d 10 s after the registry was unlocked, want 0 (the processor caught up)", g.spool.Stats().Depth)
		}
	}
}

// With --ready-max-lag 0 the stage's lag never makes the gateway unready.
func TestStageErrOff(t *testing.T) {
	g := &Gateway{}
	g.cfg.CoAP.ReadyMaxLag = 0
	if err := g.stageErr(); err != nil {
		t.Fatal(err)
	}
}
