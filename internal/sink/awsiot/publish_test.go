package awsiot

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processortest"
)

// httpErr is an API error as the data client returns it: code and HTTP status.
func httpErr(status int, code string) error {
	return &smithy.OperationError{ServiceID: "IoT Data Plane", OperationName: "Publish", Err: &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err: &smithy.GenericAPIError{Code: code, Message: "fake " + code}}}}
}

// TestPublishPack: with PublishPack, one message per thing and batch carries all its records,
// {"records":[envelope,…]}, in order.
func TestPublishPack(t *testing.T) {
	f := newFakeAWS()
	s := newTestSink(t, f, Config{PublishTopic: "coapgw/{type}/{thing}", PublishPack: true})
	out := apply(t, s, rec("a", 1, `{"x":1}`), rec("a", 2, `{"x":2}`), rec("b", 1, `{"y":1}`), rec("a", 3, `{"x":3}`))
	if results(out) != "applied,applied,applied,applied" {
		t.Fatalf("outcomes %s", results(out))
	}
	if got := f.count("Publish"); got != 2 {
		t.Fatalf("%d publishes, want 2 (one per thing)", got)
	}
	for _, p := range f.published {
		var msg struct {
			Records []struct {
				ID      string          `json:"id"`
				Payload json.RawMessage `json:"payload"`
			} `json:"records"`
		}
		if err := json.Unmarshal([]byte(p), &msg); err != nil {
			t.Fatalf("message %s: %v", p, err)
		}
		if n := len(msg.Records); msg.Records[0].ID == "a" && n != 3 || msg.Records[0].ID == "b" && n != 1 {
			t.Fatalf("message %s", p)
		}
	}
}

// TestPublishRejected: a publish AWS refuses (a 4xx other than throttling: a topic the policy
// denies) sets that thing's records aside with the reason, and does not hold the batch back;
// throttling defers them; a 5xx fails the batch (retried).
func TestPublishRejected(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want processor.Result
	}{
		{"forbidden", httpErr(http.StatusForbidden, "ForbiddenException"), processor.SetAside},
		{"bad request", httpErr(http.StatusBadRequest, "InvalidRequestException"), processor.SetAside},
		{"throttled", httpErr(http.StatusTooManyRequests, "ThrottlingException"), processor.Deferred},
		{"unavailable", httpErr(http.StatusServiceUnavailable, "ServiceUnavailableException"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAWS()
			s := newTestSink(t, f, Config{PublishTopic: "coapgw/{type}/{thing}"})
			f.fail = func(op, topic string) error {
				if op == "Publish" && strings.HasSuffix(topic, "/denied") {
					return tc.err
				}
				return nil
			}
			out, err := s.Apply(context.Background(), processortest.Batch(t, rec("ok", 1, `{"x":1}`), rec("denied", 1, `{"x":1}`)))
			if tc.want == 0 {
				if err == nil {
					t.Fatalf("a 5xx did not fail the batch: %+v", out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out[0].Result != processor.Applied || out[1].Result != tc.want {
				t.Fatalf("outcomes %+v", out)
			}
			if tc.want == processor.SetAside && !strings.Contains(out[1].Reason, "rejected the publish to coapgw/sensor/denied") {
				t.Fatalf("reason %q", out[1].Reason)
			}
			if f.state("denied") != "" {
				t.Fatalf("the refused thing's shadow was written: %s", f.state("denied"))
			}
		})
	}
}
