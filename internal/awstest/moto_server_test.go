package awstest

import (
	"context"
	_ "embed"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

//go:embed sqs_race_check.py
var sqsRaceCheck string

// moto's SQS loses a message SendMessage accepted when it is sent while another delete of the
// same queue is in progress (its delete rebuilds the queue's list without the lock sends append
// under). sqs_race_check.py forces that interleaving in moto's backend, a delete preempted inside
// its loop: as installed, moto ends with the resurrected m1 and without m3; with moto_server.py's
// fix exactly m3 is left. This is what made TestAWSOutageUnderLoad lose one acknowledged record
// now and then: the worker deletes in parallel while the gateway drains its backlog.
func TestMotoSQSDeleteKeepsConcurrentSend(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		unavailable(t, "no python3: %v", err)
	}
	if err := Install(); err != nil {
		unavailable(t, "%v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", "-c", sqsRaceCheck)
	cmd.Env = append(os.Environ(), "MOTO_SERVER_PY="+motoServer)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sqs_race_check.py: %v\n%s", err, out)
	}
	got := map[string]string{}
	for line := range strings.Lines(string(out)) {
		if variant, left, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			got[variant] = left
		}
	}
	left, ok := got["moto"]
	if !ok {
		t.Fatalf("no result for moto as installed:\n%s", out)
	}
	t.Logf("moto as installed, after deleting m1 and m2 while m3 was sent: queue holds %s", left)
	if got["fixed"] != "m3" {
		t.Fatalf("with moto_server.py's fix the queue should hold exactly m3 (m1 and m2 deleted, m3 sent), holds %q\n%s", got["fixed"], out)
	}
}
