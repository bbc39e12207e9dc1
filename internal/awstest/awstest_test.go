package awstest

import (
	"errors"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Stop makes moto unreachable; Restart brings it back on the same port, empty; the queue can be
// recreated under the same URL; CountCalls counts operations and attempts.
func TestStopRestart(t *testing.T) {
	m := Start(t)
	ctx := t.Context()
	url := m.CreateQueue(ctx, "q", nil)
	cfg := m.AWSConfig(ctx)
	calls := CountCalls(&cfg)
	client := sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.RetryMaxAttempts = 2 })
	if cfg.Region != Region || aws.ToString(cfg.BaseEndpoint) != m.Endpoint() {
		t.Fatalf("config region %q endpoint %q", cfg.Region, aws.ToString(cfg.BaseEndpoint))
	}
	if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("hi")}); err != nil {
		t.Fatal(err)
	}

	m.Stop()
	m.Stop() // idempotent
	if resp, err := http.Get(m.Endpoint() + "/moto-api/"); err == nil {
		resp.Body.Close()
		t.Fatal("moto still answers after Stop")
	}
	if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("lost")}); err == nil {
		t.Fatal("SendMessage succeeded while moto was stopped")
	}

	m.Restart()
	_, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String("q")})
	var missing *types.QueueDoesNotExist
	if !errors.As(err, &missing) {
		t.Fatalf("after Restart the queue should be gone, got %v", err)
	}
	if again := m.CreateQueue(ctx, "q", nil); again != url {
		t.Fatalf("recreated queue URL %s, want %s", again, url)
	}
	if got := calls.Count("SendMessage"); got != 2 {
		t.Errorf("SendMessage calls = %d, want 2", got)
	}
	if got := calls.Attempts("SendMessage"); got != 3 { // the failed call was tried twice
		t.Errorf("SendMessage attempts = %d, want 3", got)
	}
}

type recorder struct{ fatal, skip bool }

func (r *recorder) Helper()               {}
func (r *recorder) Fatalf(string, ...any) { r.fatal = true }
func (r *recorder) Skipf(string, ...any)  { r.skip = true }

func TestUnavailableFailsWhenPeersAreRequired(t *testing.T) {
	for _, c := range []struct {
		env         string
		fatal, skip bool
	}{{"", false, true}, {"0", false, true}, {"1", true, false}} {
		t.Setenv("COAPGW_REQUIRE_PEERS", c.env)
		var r recorder
		unavailable(&r, "no moto")
		if r.fatal != c.fatal || r.skip != c.skip {
			t.Errorf("COAPGW_REQUIRE_PEERS=%q: fatal %v skip %v", c.env, r.fatal, r.skip)
		}
	}
}
