package awsiot

// TESTPLAN item 27 against moto: AWS throttling (HTTP 429 / ThrottlingException) as real HTTP
// responses, through the SDK's IoT client (control plane) and the sink's own data-plane client,
// is retried — by the SDK's retryer within a call, and by the processor's retry of the batch
// when the SDK's attempts run out — and never sets a record aside.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/aws/smithy-go"

	"github.com/coapgw/coapgw/internal/awstest"
	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/record"
)

// plane is the kind of request the throttling proxy tells apart.
type plane int

const (
	controlPlane plane = iota // the registry: /thing-types/…, /things/{name}, /endpoint
	dataPlane                 // shadows and publish: /things/{name}/shadow, /topics/…
)

func (p plane) String() string { return [...]string{"control", "data"}[p] }

var dataPlaneOps = []string{"GetThingShadow", "UpdateThingShadow", "Publish"}

// throttleProxy is an HTTP reverse proxy in front of moto that answers the next armed[k]
// requests of plane k with AWS's throttling response instead of forwarding them.
//
// Control plane (AWS IoT, restJson1): HTTP 429, X-Amzn-ErrorType: ThrottlingException and
// {"message":"Rate exceeded"}; the SDK's iot deserializer takes the code from that header (else
// from the body's "code"/"__type") and returns the modeled *types.ThrottlingException.
//
// Data plane (iot-data, also restJson1: ThrottlingException {message}, HTTP 429): the same
// shape, with the header in the long form the restJson1 protocol allows
// ("ThrottlingException:<namespace URI>", which clients must cut at the colon), so that the data
// client's parsing of the code is exercised too.
type throttleProxy struct {
	srv *httptest.Server

	mu        sync.Mutex
	armed     [2]int
	throttled [2]int
	forwarded [2]int
	log       []string // the requests answered with 429
}

func newThrottleProxy(t *testing.T, target string) *throttleProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	p := &throttleProxy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host // the Host the client signed
		},
		Transport: tr,
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := controlPlane
		if path := r.URL.Path; strings.HasPrefix(path, "/topics/") ||
			strings.HasPrefix(path, "/things/") && strings.HasSuffix(path, "/shadow") {
			k = dataPlane
		}
		p.mu.Lock()
		throttle := p.armed[k] > 0
		if throttle {
			p.armed[k]--
			p.throttled[k]++
			p.log = append(p.log, fmt.Sprintf("%s %s %s (%s)", k, r.Method, r.URL.Path, r.Header.Get("Amz-Sdk-Request")))
		} else {
			p.forwarded[k]++
		}
		n := p.throttled[k]
		p.mu.Unlock()
		if !throttle {
			rp.ServeHTTP(w, r)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		code := "ThrottlingException"
		if k == dataPlane {
			code += ":http://internal.amazon.com/coral/com.amazon.coral.availability/"
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("X-Amzn-RequestId", fmt.Sprintf("throttled-%s-%d", k, n))
		h.Set("X-Amzn-ErrorType", code)
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"message":"Rate exceeded"}`)
	}))
	t.Cleanup(func() {
		p.srv.Close()
		tr.CloseIdleConnections()
	})
	return p
}

// arm makes the proxy throttle the next n requests of plane k.
func (p *throttleProxy) arm(k plane, n int) {
	p.mu.Lock()
	p.armed[k] += n
	p.mu.Unlock()
}

// counts returns the requests of plane k answered with 429 and forwarded, and how many armed
// throttles are left.
func (p *throttleProxy) counts(k plane) (throttled, forwarded, armed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.throttled[k], p.forwarded[k], p.armed[k]
}

func (p *throttleProxy) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("throttled %v forwarded %v (control, data): %s", p.throttled, p.forwarded, strings.Join(p.log, "; "))
}

// attempts is the HTTP attempts of all the operations ops.
func attempts(c *awstest.Calls, ops ...string) int {
	n := 0
	for _, op := range ops {
		n += c.Attempts(op)
	}
	return n
}

// errRecorder is a processor.Sink that records what each Apply of the sink returned.
type errRecorder struct {
	s    *Sink
	mu   sync.Mutex
	errs []error
}

func (r *errRecorder) Apply(ctx context.Context, b *processor.Batch) ([]processor.Outcome, error) {
	out, err := r.s.Apply(ctx, b)
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	return out, err
}

// throughThrottleProxy returns a proxy in front of moto of its own and an SDK configuration
// that sends both planes through it, counting calls and attempts.
func throughThrottleProxy(t *testing.T, m *awstest.Moto) (*throttleProxy, aws.Config, *awstest.Calls) {
	t.Helper()
	proxy := newThrottleProxy(t, m.Endpoint())
	cfg := m.AWSConfig(t.Context())
	cfg.BaseEndpoint = aws.String(proxy.srv.URL)
	return proxy, cfg, awstest.CountCalls(&cfg)
}

// expectThing checks, straight in moto, a thing's type in the registry and in coapgw's key, and
// its shadow (written once) with the reported state want.
func expectThing(t *testing.T, m *awstest.Moto, thing, typ, want string) {
	t.Helper()
	ctx := t.Context()
	direct := m.AWSConfig(ctx)
	desc, err := iot.NewFromConfig(direct).DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String(thing)})
	if err != nil || aws.ToString(desc.ThingTypeName) != typ {
		t.Errorf("%s in the registry: %v %+v", thing, err, desc)
		return
	}
	check, err := New(Config{}, direct, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	th, err := check.loadShadow(ctx, thing)
	if err != nil || th.typ != typ || th.version != 1 {
		t.Errorf("%s shadow: %v %+v", thing, err, th)
		return
	}
	if got := string(th.doc.AppendState(nil)); canon(t, got) != canon(t, want) {
		t.Errorf("%s shadow state %s, want %s", thing, got, want)
	}
}

// TestMotoThrottling: real 429 ThrottlingException responses from both planes, between the
// sink and moto. Its parts run in parallel (most of their time is the SDK's backoff and its
// adaptive rate limiter's waits), each with its own proxy, sink and things.
//
// First the SDK's retries absorb them: with the default 5 attempts per call and 2 throttled
// requests per plane, the first Apply succeeds, every 429 cost exactly one extra HTTP attempt
// of the same call (no extra call by the sink) and every record is applied.
//
// Then, with 2 attempts per call, 2 throttled requests exhaust one call's attempts, once per
// plane: Apply returns the throttling error, which is transient (an error, not a record set
// aside: the processor retries the batch), and the processor's retry of the batch succeeds.
func TestMotoThrottling(t *testing.T) {
	m := awstest.Start(t)

	t.Run("retried by the SDK", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		start := time.Now()
		proxy, cfg, calls := throughThrottleProxy(t, m)
		s, err := New(Config{}, cfg, nil, nil) // MaxAttempts 5
		if err != nil {
			t.Fatal(err)
		}
		const perPlane = 2
		proxy.arm(controlPlane, perPlane)
		proxy.arm(dataPlane, perPlane)
		var recs []record.Record
		for i := 1; i <= 3; i++ {
			thing := fmt.Sprintf("thr-%d", i)
			recs = append(recs,
				processortest.Rec("gw-1", "sensor", thing, t0, fmt.Sprintf(`{"temp":%d}`, 20+i)),
				processortest.Rec("gw-1", "sensor", thing, t0.Add(time.Second), fmt.Sprintf(`{"hum":%d,"pos":{"lat":%d}}`, 40+i, i)))
		}
		out, err := s.Apply(ctx, processortest.Batch(t, recs...))
		if err != nil {
			t.Fatalf("Apply: %v (%v)", err, proxy)
		}
		if got := results(out); got != strings.Repeat("applied,", len(recs)-1)+"applied" {
			t.Fatalf("outcomes %s: %+v", got, out)
		}
		for k := range 2 {
			throttled, forwarded, armed := proxy.counts(plane(k))
			t.Logf("%s plane: %d answered 429, %d forwarded", plane(k), throttled, forwarded)
			if throttled != perPlane || armed != 0 {
				t.Errorf("%s plane: %d requests answered 429, want %d (%v)", plane(k), throttled, perPlane, proxy)
			}
		}
		// One call per operation as without throttling (shadow and registry shadow: two reads and two
		// updates per new thing); each 429 cost one more attempt of it.
		for op, want := range map[string]int{"CreateThingType": 1, "CreateThing": 3, "DescribeThing": 0, "DescribeEndpoint": 0, "GetThingShadow": 6, "UpdateThingShadow": 6} {
			if got := calls.Count(op); got != want {
				t.Errorf("%s called %d times, want %d (%v)", op, got, want, calls)
			}
		}
		if got := attempts(calls, controlPlaneOps...) - calls.Total(controlPlaneOps...); got != perPlane {
			t.Errorf("control plane: %d attempts beyond the calls, want %d (one per 429)", got, perPlane)
		}
		if got := attempts(calls, dataPlaneOps...) - calls.Total(dataPlaneOps...); got != perPlane {
			t.Errorf("data plane: %d attempts beyond the calls, want %d (one per 429)", got, perPlane)
		}
		for i := 1; i <= 3; i++ {
			expectThing(t, m, fmt.Sprintf("thr-%d", i), "sensor", fmt.Sprintf(`{"temp":%d,"hum":%d,"pos":{"lat":%d}}`, 20+i, 40+i, i))
		}
		t.Logf("took %v; %v", time.Since(start).Round(time.Millisecond), proxy)
	})

	// Each case is a batch for one new thing whose first call on plane k is throttled twice,
	// with a sink allowing 2 attempts per call.
	for _, tc := range []struct {
		k                plane
		typ, thing, what string
		recs             []string
		state            string
	}{
		{dataPlane, "sensor", "exhaust-data", "get shadow coapgw of exhaust-data", []string{`{"temp":1}`, `{"pos":{"lat":5}}`}, `{"temp":1,"pos":{"lat":5}}`},
		{controlPlane, "meter", "exhaust-ctl", "create thing type meter", []string{`{"kwh":[1,2]}`}, `{"kwh":[1,2]}`},
	} {
		t.Run("retried by the processor/"+tc.k.String(), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			start := time.Now()
			proxy, cfg, _ := throughThrottleProxy(t, m)
			s, err := New(Config{MaxAttempts: 2}, cfg, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			rs := &errRecorder{s: s}
			var waits []time.Duration
			p, err := processor.New(processor.Config{Sleep: func(ctx context.Context, d time.Duration) error {
				waits = append(waits, d) // the processor's backoff between the batch's attempts: skipped
				return ctx.Err()
			}}, rs, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			var recs []record.Record
			for i, payload := range tc.recs {
				recs = append(recs, processortest.Rec("gw-2", tc.typ, tc.thing, t0.Add(time.Duration(i)*time.Second), payload))
			}
			proxy.arm(tc.k, 2)
			out, err := p.Process(ctx, processortest.Inputs(recs...))
			if err != nil {
				t.Fatalf("Process: %v", err)
			}
			// The sink did not fail the batch: it deferred the thing's records (handed back, to
			// come back in a few seconds), without the processor retrying.
			for _, o := range out {
				if o.Result != processor.Deferred || o.After < 2*time.Second || !strings.Contains(o.Reason, tc.what+": ") || !strings.Contains(o.Reason, "ThrottlingException") {
					t.Fatalf("outcomes %+v: want deferred by 2s or more, throttled in %q", out, tc.what)
				}
			}
			throttled, _, armed := proxy.counts(tc.k)
			t.Logf("%s plane: %d answered 429", tc.k, throttled)
			if throttled != 2 || armed != 0 {
				t.Fatalf("%d requests answered 429, want 2 (%v)", throttled, proxy)
			}
			if len(rs.errs) != 1 || rs.errs[0] != nil || len(waits) != 0 {
				t.Fatalf("Apply errors %v, processor waits %v: want one Apply, no error", rs.errs, waits)
			}
			// Redelivered, the records apply.
			out, err = p.Process(ctx, processortest.Inputs(recs...))
			if err != nil || results(out) != strings.Repeat("applied,", len(recs)-1)+"applied" {
				t.Fatalf("redelivered: %v %+v", err, out)
			}
			if st := p.Stats(); st.Retries != 0 || st.Applied != int64(len(recs)) || st.SetAside != 0 {
				t.Errorf("processor stats %+v", st)
			}
			// The error the SDK gave up with, as the sink sees it (the call the batch made first).
			proxy.arm(tc.k, 2)
			var e error
			if tc.k == dataPlane {
				_, e = s.getRegistry(ctx, tc.thing)
			} else {
				s.types.Remove(tc.typ)
				e = s.ensureType(ctx, tc.typ)
			}
			if e == nil || deferral(e) == nil {
				t.Fatalf("throttled call: %v, not a deferral", e)
			}
			t.Logf("throttled call: %v", e)
			var pe *permanentError
			if errors.As(e, &pe) || errors.As(classify(e), &pe) {
				t.Errorf("classified permanent: %v", e)
			}
			if !strings.HasPrefix(e.Error(), tc.what+": ") || !hasCode(e, "ThrottlingException") {
				t.Errorf("error %q: want %q with code ThrottlingException", e, tc.what)
			}
			var api smithy.APIError
			if errors.As(e, &api) && api.ErrorMessage() != "Rate exceeded" {
				t.Errorf("error message %q", api.ErrorMessage())
			}
			var maxed *retry.MaxAttemptsError
			if !errors.As(e, &maxed) || maxed.Attempt != 2 {
				t.Errorf("not the SDK giving up after 2 attempts: %v", e)
			}
			var status interface{ HTTPStatusCode() int }
			if !errors.As(e, &status) || status.HTTPStatusCode() != http.StatusTooManyRequests {
				t.Errorf("not an HTTP 429: %v", e)
			}
			if retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(e) != aws.TrueTernary ||
				!retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(e).Bool() {
				t.Errorf("the SDK does not see a retryable throttle: %v", e)
			}
			var modeled *types.ThrottlingException
			if tc.k == controlPlane && !errors.As(e, &modeled) {
				t.Errorf("control plane: not the modeled *types.ThrottlingException: %v", e)
			}
			expectThing(t, m, tc.thing, tc.typ, tc.state)
			t.Logf("took %v; %v", time.Since(start).Round(time.Millisecond), proxy)
		})
	}
}
