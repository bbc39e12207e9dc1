package main

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/awstest"
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
)

// waitReadyz polls /readyz until it answers code with a body containing want.
func waitReadyz(t *testing.T, g *gw, code int, want string, timeout time.Duration, each func()) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if each != nil {
			each()
		}
		c, body := readyz(t, g)
		if c == code && strings.Contains(body, want) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz %d %s after %v, want %d with %q\n%s", c, body, timeout, code, want, g.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReadyzWhileQueueUnreachable (issue 11): SQS unreachable for longer than --ready-max-lag
// makes /readyz answer 503 with the reason (the queue failing, how far behind, the spool's
// backlog) while devices keep getting 2.04 from the spool; SQS back, /readyz is 200 again and
// the spool drains. The outage is logged once when it starts and once when it ends.
func TestReadyzWhileQueueUnreachable(t *testing.T) {
	m := awstest.Start(t)
	awsEnv(t)
	queue := m.CreateQueue(t.Context(), "coapgw-ready", nil)
	proxy := m.NewProxy(t)
	g := startGW(t, t.TempDir(), "--queue", queue, "--aws-endpoint", proxy.Endpoint(),
		"--ready-max-lag", "1s", "--forward-backoff-max", "200ms")
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := 0
	post := func() {
		n++
		resp, err := c.Post("/ready/dev-1", `{"n":1}`)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code != coapmsg.Changed {
			t.Fatalf("post %d: %v, want 2.04 (the spool takes it)", n, resp.Code)
		}
	}
	post()
	waitReadyz(t, g, http.StatusOK, `"status":"ready"`, 10*time.Second, nil)

	proxy.Cut()
	body := waitReadyz(t, g, http.StatusServiceUnavailable, "queue failing", 30*time.Second, post)
	for _, want := range []string{"calls in a row", "forwarder", "behind (ready-max-lag 1s)", "records in the spool"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz reason %s lacks %q", body, want)
		}
	}
	post()

	proxy.Restore()
	waitReadyz(t, g, http.StatusOK, `"spool_depth":0`, 60*time.Second, nil)
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	log := g.stderr.String()
	if k := strings.Count(log, "queue calls failing"); k != 1 {
		t.Errorf("the outage logged %d times, want once:\n%s", k, log)
	}
	if k := strings.Count(log, "queue calls succeed again"); k != 1 {
		t.Errorf("the recovery logged %d times, want once:\n%s", k, log)
	}
}

// With --ack-after queue, records SQS does not accept in time get 5.03, and the run of them is
// logged once with its count, not once per request.
func TestQueueAckFailuresLoggedOnce(t *testing.T) {
	m := awstest.Start(t)
	awsEnv(t)
	queue := m.CreateQueue(t.Context(), "coapgw-ack", nil)
	proxy := m.NewProxy(t)
	g := startGW(t, t.TempDir(), "--queue", queue, "--aws-endpoint", proxy.Endpoint(),
		"--ack-after", "queue", "--queue-ack-timeout", "200ms", "--forward-backoff-max", "200ms")
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	post := func() coapmsg.Code {
		resp, err := c.Post("/ack/dev-1", `{"n":1}`)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Code
	}
	if code := post(); code != coapmsg.Changed {
		t.Fatalf("post with SQS up: %v", code)
	}
	proxy.Cut()
	for i := range 10 {
		if code := post(); code != coapmsg.ServiceUnavailable {
			t.Fatalf("post %d with SQS unreachable: %v, want 5.03", i, code)
		}
	}
	proxy.Restore()
	deadline := time.Now().Add(60 * time.Second)
	for post() != coapmsg.Changed {
		if time.Now().After(deadline) {
			t.Fatal("no 2.04 a minute after SQS came back")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	log := g.stderr.String()
	if k := strings.Count(log, "records not accepted by the queue in time"); k != 1 {
		t.Errorf("10 failed queue waits logged %d times, want once:\n%s", k, log)
	}
	if k := strings.Count(log, "level=WARN"); k != 2 { // the forwarder's outage and the failed waits
		t.Errorf("%d Warn lines, want 2:\n%s", k, log)
	}
	i := strings.Index(log, "the queue accepts records in time again")
	if i < 0 || !strings.Contains(log[i:], "failed=") {
		t.Errorf("no recovery line with the count:\n%s", log)
	}
}
