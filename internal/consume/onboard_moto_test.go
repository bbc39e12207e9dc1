package consume

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgw/coapgw/internal/awstest"
	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/sink/awsiot"
)

// rateProxy stands in front of moto as AWS IoT's control plane does for an account: CreateThing
// and CreateThingType above their rates (token buckets of one second's burst) are answered with
// HTTP 429 ThrottlingException; everything else is forwarded. It also answers a CreateThing of a
// thing that exists with success itself, as AWS does for the same configuration: moto replaces
// the thing, and with it the shadows already written.
type rateProxy struct {
	srv *httptest.Server

	mu        sync.Mutex
	createMu  sync.Mutex              // one CreateThing at a time
	buckets   map[string]*proxyBucket // by operation
	throttled map[string]int
	passed    map[string]int
}

type proxyBucket struct {
	rate, tokens float64
	last         time.Time
}

func newRateProxy(t *testing.T, target string, rates map[string]float64) *rateProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(u); r.Out.Host = r.In.Host },
		Transport: tr,
	}
	p := &rateProxy{buckets: map[string]*proxyBucket{}, throttled: map[string]int{}, passed: map[string]int{}}
	for op, r := range rates {
		p.buckets[op] = &proxyBucket{rate: r, tokens: r}
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := ""
		switch path := r.URL.Path; {
		case r.Method != http.MethodPost:
		case strings.HasPrefix(path, "/thing-types/"):
			op = "CreateThingType"
		case strings.HasPrefix(path, "/things/") && strings.Count(path, "/") == 2:
			op = "CreateThing"
		}
		if op == "CreateThing" {
			// One at a time, and not again for a thing that exists (asked of moto itself: a
			// cancelled request may have created it).
			p.createMu.Lock()
			defer p.createMu.Unlock()
			if p.exists(target, r) {
				_, _ = io.Copy(io.Discard, r.Body)
				name := strings.TrimPrefix(r.URL.Path, "/things/")
				w.Header().Set("Content-Type", "application/json")
				_, _ = fmt.Fprintf(w, `{"thingName":%q,"thingArn":"arn:aws:iot:%s:123456789012:thing/%s","thingId":"x"}`, name, awstest.Region, name)
				return
			}
		}
		if op != "" && !p.take(op) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Amzn-ErrorType", "ThrottlingException")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"message":"Rate exceeded"}`)
			return
		}
		// Forwarded requests complete in moto even if the client gives up on them (as AWS
		// completes a call whose caller went away).
		rp.ServeHTTP(w, r.WithContext(context.WithoutCancel(r.Context())))
	}))
	t.Cleanup(func() {
		p.srv.Close()
		tr.CloseIdleConnections()
	})
	return p
}

// exists asks moto whether the thing r would create exists (DescribeThing).
func (p *rateProxy) exists(target string, r *http.Request) bool {
	req, _ := http.NewRequest(http.MethodGet, target+r.URL.Path, nil)
	// moto routes by the service in the signature's scope; it does not check the signature.
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=test/20260101/"+awstest.Region+"/iot/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

func (p *rateProxy) take(op string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.buckets[op]
	now := time.Now()
	if !b.last.IsZero() {
		b.tokens = min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		p.throttled[op]++
		return false
	}
	b.tokens--
	p.passed[op]++
	return true
}

func (p *rateProxy) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("passed %v, throttled %v", p.passed, p.throttled)
}

// TestMotoOnboardingThrottled: 5,000 new things of 10 new types arrive at once and four consumers
// (two workers, two Lambda handlers fed as an event source mapping feeds them) onboard them
// against a control plane that allows 60 CreateThing and 5 CreateThingType calls a second for
// all of them together, answering 429 ThrottlingException above. Each consumer paces itself to
// its share (Consumers: 4) and hands back at once what it cannot create in time, the rest of its
// batch applied; records handed back are served first when they return. Every thing ends with
// its shadow, nothing reaches the DLQ (maxReceiveCount 5, as deploy/terraform sets it), and the
// consumers together stay under the account's rate: AWS throttles at most 1 % of their
// CreateThing calls (before the budget, each consumer went at the control plane on its own and
// drew 151 and 476 429s in two runs, which other clients of the account would have suffered too). AWS IoT is moto behind a rate-limiting
// proxy; the queue is the in-memory SQS of the unit tests (receive counts, visibility, redrive),
// because moto's SQS slows down with thousands of messages in a queue (500 sends took 9 s, the
// next 500 took 41 s).
func TestMotoOnboardingThrottled(t *testing.T) {
	const (
		things    = 5000
		consumers = 4
		// The account's rates, as the proxy enforces them and as the consumers are told.
		thingRate, typeRate = 60, 5
		// The Lambda function's timeout and the queue's visibility timeout (6×, as AWS advises
		// for event source mappings): a reported failure comes back after it.
		lambdaTimeout = 6 * time.Second
		visibility    = 36
	)
	m := awstest.Start(t)
	ctx := t.Context()
	proxy := newRateProxy(t, m.Endpoint(), map[string]float64{"CreateThing": thingRate, "CreateThingType": typeRate})
	cfg := m.AWSConfig(ctx)
	cfg.BaseEndpoint = aws.String(proxy.srv.URL)
	calls := awstest.CountCalls(&cfg)
	reader, err := awsiot.New(awsiot.Config{}, m.AWSConfig(ctx), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	q := newFakeSQS(5)
	for i := range things {
		body, err := envelope.Encode(motoRec("gw-o", fmt.Sprintf("kind%d", i%10), fmt.Sprintf("new-%d", i), uint64(i+1), i%300, fmt.Sprintf(`{"n":%d}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		q.send(body)
	}
	began := time.Now()

	scfg := awsiot.Config{Consumers: consumers, CreateThingRate: thingRate, CreateThingTypeRate: typeRate}
	newProc := func(reg prometheus.Registerer) *processor.Processor {
		sink, err := awsiot.New(scfg, cfg, nil, reg)
		if err != nil {
			t.Fatal(err)
		}
		p, err := processor.New(processor.Config{BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second}, sink, nil, reg)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	regs := make([]*prometheus.Registry, consumers)
	for i := range regs {
		regs[i] = prometheus.NewRegistry()
	}
	// Two workers.
	for i := range 2 {
		w, err := newWorker(Config{QueueURL: "https://sqs.test/1/onboard", WaitTime: time.Second, BatchSize: 200, BatchWait: 100 * time.Millisecond,
			VisibilityTimeout: 30 * time.Second}, q, newProc(regs[i]), nil, regs[i])
		if err != nil {
			t.Fatal(err)
		}
		defer start(t, w)()
	}
	// Two Lambda handlers, each fed batches of up to 10 messages as an event source mapping does
	// (a deadline of lambdaTimeout per invocation; reported failures come back after the queue's
	// visibility timeout).
	lctx, stopLambdas := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 2; i < consumers; i++ {
		h, err := NewHandler(newProc(regs[i]), nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lctx.Err() == nil {
				out, err := q.ReceiveMessage(lctx, &awssqs.ReceiveMessageInput{MaxNumberOfMessages: 10, WaitTimeSeconds: 1, VisibilityTimeout: visibility})
				if err != nil || len(out.Messages) == 0 {
					continue
				}
				var ev events.SQSEvent
				for _, m := range out.Messages {
					ev.Records = append(ev.Records, events.SQSMessage{MessageId: aws.ToString(m.MessageId), ReceiptHandle: aws.ToString(m.ReceiptHandle),
						Body: aws.ToString(m.Body), Attributes: m.Attributes, EventSource: "aws:sqs"})
				}
				ictx, cancel := context.WithTimeout(lctx, lambdaTimeout)
				resp, _ := h.HandleSQSEvent(ictx, ev)
				cancel()
				bad := map[string]bool{}
				for _, f := range resp.BatchItemFailures {
					bad[f.ItemIdentifier] = true
				}
				var del []types.DeleteMessageBatchRequestEntry
				for i, m := range out.Messages {
					if !bad[aws.ToString(m.MessageId)] {
						del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
					}
					if len(del) == 10 || i == len(out.Messages)-1 && len(del) > 0 {
						_, _ = q.DeleteMessageBatch(context.Background(), &awssqs.DeleteMessageBatchInput{Entries: del})
						del = nil
					}
				}
			}
		}()
	}
	defer func() {
		stopLambdas()
		wg.Wait()
	}()

	last := time.Now()
	waitFor(t, 5*time.Minute, "an empty queue", func() bool {
		n, dlq := q.sizes()
		if time.Since(last) > 10*time.Second {
			last = time.Now()
			t.Logf("%v: queue %d, DLQ %d; proxy %v", time.Since(began).Round(time.Second), n, dlq, proxy)
		}
		return n == 0
	})
	took := time.Since(began)
	if _, dlq := q.sizes(); dlq != 0 {
		t.Fatalf("%d records in the DLQ (%v)", dlq, proxy)
	}
	missing := 0
	for i := range things {
		got, _, err := reader.Shadow(ctx, fmt.Sprintf("new-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if got != fmt.Sprintf(`{"n":%d}`, i) {
			if missing++; missing <= 5 {
				t.Errorf("new-%d: shadow %q", i, got)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d shadows missing", missing, things)
	}
	proxy.mu.Lock()
	throttled := proxy.throttled["CreateThing"]
	proxy.mu.Unlock()
	if throttled > things/100 {
		t.Errorf("AWS throttled %d CreateThing calls: the consumers together went over the account's rate (%v)", throttled, proxy)
	}
	var deferred, received float64
	for _, reg := range regs {
		deferred += metricSum(t, reg, "coapgw_processor_records_total", "deferred")
		received += metricSum(t, reg, "coapgw_consume_received_total", "")
	}
	t.Logf("%d things through %d consumers in %v (%.0f things/s; the control plane allows %d/s); proxy %v; CreateThing calls %d; records deferred %.0f; worker receives %.0f; most receives of a message %d",
		things, consumers, took.Round(time.Millisecond), things/took.Seconds(), thingRate, proxy, calls.Total("CreateThing"), deferred, received, q.maxReceives)
}

// metricSum is the sum of a metric's series whose labels include value (all of them if value is
// "") in reg.
func metricSum(t *testing.T, reg *prometheus.Registry, name, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := value == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetValue() == value
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			}
		}
	}
	return sum
}
