package sqs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/forward"
	"github.com/coapgw/coapgw/internal/record"
)

// fakeSQS checks requests against SQS's limits and answers with respond (default: all accepted).
// sqsAPI has a single method, so the fake implements it rather than embedding the interface.
type fakeSQS struct {
	t *testing.T

	mu      sync.Mutex
	reqs    []*awssqs.SendMessageBatchInput
	respond func(in *awssqs.SendMessageBatchInput) (*awssqs.SendMessageBatchOutput, error)
}

var _ sqsAPI = (*fakeSQS)(nil)

func (f *fakeSQS) SendMessageBatch(ctx context.Context, in *awssqs.SendMessageBatchInput, _ ...func(*awssqs.Options)) (*awssqs.SendMessageBatchOutput, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, in)
	f.mu.Unlock()
	if len(in.Entries) == 0 || len(in.Entries) > 10 {
		f.t.Errorf("request with %d entries", len(in.Entries))
	}
	total := 0
	ids := map[string]bool{}
	for _, e := range in.Entries {
		total += messageSize(e)
		if ids[aws.ToString(e.Id)] {
			f.t.Errorf("duplicate entry id %s", aws.ToString(e.Id))
		}
		ids[aws.ToString(e.Id)] = true
		if !envelope.Allowed([]byte(aws.ToString(e.MessageBody))) {
			f.t.Errorf("body with characters SQS rejects")
		}
	}
	if total > MaxBatchBytes {
		f.t.Errorf("request of %d bytes, limit %d", total, MaxBatchBytes)
		return nil, &types.BatchRequestTooLong{Message: aws.String("too long")}
	}
	if f.respond != nil {
		return f.respond(in)
	}
	return acceptAll(in), nil
}

func acceptAll(in *awssqs.SendMessageBatchInput) *awssqs.SendMessageBatchOutput {
	out := &awssqs.SendMessageBatchOutput{}
	for _, e := range in.Entries {
		out.Successful = append(out.Successful, types.SendMessageBatchResultEntry{Id: e.Id, MessageId: aws.String("m-" + aws.ToString(e.Id))})
	}
	return out
}

// messageSize is a message's size as SQS counts it: body plus attribute names, types and values.
func messageSize(e types.SendMessageBatchRequestEntry) int {
	n := len(aws.ToString(e.MessageBody))
	for k, v := range e.MessageAttributes {
		n += len(k) + len(aws.ToString(v.DataType)) + len(aws.ToString(v.StringValue)) + len(v.BinaryValue)
	}
	return n
}

func (f *fakeSQS) requests() []*awssqs.SendMessageBatchInput {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*awssqs.SendMessageBatchInput(nil), f.reqs...)
}

const stdURL = "https://sqs.us-east-1.amazonaws.com/123456789012/coapgw"

func newTest(t *testing.T, cfg Config) (*Publisher, *fakeSQS) {
	t.Helper()
	fake := &fakeSQS{t: t}
	if cfg.QueueURL == "" {
		cfg.QueueURL = stdURL
	}
	p, err := newPublisher(cfg, fake)
	if err != nil {
		t.Fatal(err)
	}
	return p, fake
}

func rec(seq uint64, payload []byte) record.Record {
	return record.Record{Seq: seq, GW: "gw-1", ReceivedAt: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC),
		Type: "sensor", ID: "dev-" + strconv.FormatUint(seq%5, 10), ContentFormat: 50, Payload: payload, Peer: "192.0.2.1:5683"}
}

func recs(n int, payload []byte) []record.Record {
	rs := make([]record.Record, n)
	for i := range rs {
		rs[i] = rec(uint64(i+1), payload)
	}
	return rs
}

// checkDelivered decodes every message of the requests and checks each record arrived once, intact.
func checkDelivered(t *testing.T, reqs []*awssqs.SendMessageBatchInput, want []record.Record) {
	t.Helper()
	got := map[uint64]record.Record{}
	for _, rq := range reqs {
		for _, e := range rq.Entries {
			r, err := envelope.Decode(aws.ToString(e.MessageBody))
			if err != nil {
				t.Fatalf("body does not decode: %v", err)
			}
			if _, dup := got[r.Seq]; dup {
				t.Fatalf("seq %d sent twice", r.Seq)
			}
			got[r.Seq] = r
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d records sent, want %d", len(got), len(want))
	}
	for _, w := range want {
		g := got[w.Seq]
		if g.GW != w.GW || g.ID != w.ID || string(g.Payload) != string(w.Payload) {
			t.Fatalf("record %d changed in transit", w.Seq)
		}
	}
}

func TestBatchesByTen(t *testing.T) {
	p, fake := newTest(t, Config{})
	if p.MaxBatch() != 10 {
		t.Fatalf("MaxBatch = %d", p.MaxBatch())
	}
	in := recs(25, []byte(`{"t":1}`))
	errs, err := p.Publish(context.Background(), in)
	if err != nil || errs != nil {
		t.Fatalf("Publish = %v, %v", errs, err)
	}
	reqs := fake.requests()
	var sizes []int
	for _, rq := range reqs {
		sizes = append(sizes, len(rq.Entries))
		if aws.ToString(rq.QueueUrl) != stdURL {
			t.Errorf("queue URL %s", aws.ToString(rq.QueueUrl))
		}
	}
	if fmt.Sprint(sizes) != "[10 10 5]" {
		t.Errorf("request sizes %v, want [10 10 5]", sizes)
	}
	checkDelivered(t, reqs, in)
	e := reqs[0].Entries[3]
	if aws.ToString(e.MessageAttributes[envelope.AttrType].StringValue) != "sensor" ||
		aws.ToString(e.MessageAttributes[envelope.AttrThing].StringValue) != "dev-4" ||
		aws.ToString(e.MessageAttributes[envelope.AttrThing].DataType) != "String" {
		t.Errorf("attributes %+v", e.MessageAttributes)
	}
	if e.MessageGroupId != nil || e.MessageDeduplicationId != nil {
		t.Error("FIFO ids on a standard queue")
	}
}

// sizedRecord returns a record whose message (body + attributes) is exactly size bytes.
func sizedRecord(t *testing.T, seq uint64, size int) record.Record {
	t.Helper()
	r := rec(seq, []byte(`{"p":""}`))
	p, _ := newPublisher(Config{QueueURL: stdURL}, nil)
	_, base, err := p.entry(&r, 0)
	if err != nil {
		t.Fatal(err)
	}
	r.Payload = []byte(`{"p":"` + strings.Repeat("x", size-base) + `"}`)
	_, got, err := p.entry(&r, 0)
	if size > MaxBatchBytes {
		if !errors.Is(err, forward.ErrRejected) || !strings.Contains(err.Error(), strconv.Itoa(size)) {
			t.Fatalf("a message of %d bytes: %v", size, err)
		}
	} else if err != nil || got != size {
		t.Fatalf("sized record: %d bytes (%v), want %d", got, err, size)
	}
	return r
}

func TestBatchesByBytes(t *testing.T) {
	t.Run("large messages", func(t *testing.T) {
		p, fake := newTest(t, Config{})
		var in []record.Record
		for i := range 10 {
			in = append(in, sizedRecord(t, uint64(i+1), 400_000))
		}
		if errs, err := p.Publish(context.Background(), in); err != nil || errs != nil {
			t.Fatalf("Publish = %v, %v", errs, err)
		}
		reqs := fake.requests()
		if len(reqs) != 5 {
			t.Errorf("%d requests for 10 messages of 400,000 bytes, want 5 (two per MiB)", len(reqs))
		}
		checkDelivered(t, reqs, in)
	})
	t.Run("exactly 1 MiB fits one request", func(t *testing.T) {
		p, fake := newTest(t, Config{})
		in := []record.Record{sizedRecord(t, 1, 524_288), sizedRecord(t, 2, 524_288)}
		if _, err := p.Publish(context.Background(), in); err != nil {
			t.Fatal(err)
		}
		if n := len(fake.requests()); n != 1 {
			t.Errorf("%d requests for 2 × 524,288 bytes, want 1", n)
		}
	})
	t.Run("one byte more splits", func(t *testing.T) {
		p, fake := newTest(t, Config{})
		in := []record.Record{sizedRecord(t, 1, 524_288), sizedRecord(t, 2, 524_289)}
		if _, err := p.Publish(context.Background(), in); err != nil {
			t.Fatal(err)
		}
		if n := len(fake.requests()); n != 2 {
			t.Errorf("%d requests for 1,048,577 bytes, want 2", n)
		}
	})
	t.Run("a message over the limit is refused without a call", func(t *testing.T) {
		p, fake := newTest(t, Config{})
		in := []record.Record{rec(1, []byte(`{}`)), sizedRecord(t, 2, MaxBatchBytes+1), sizedRecord(t, 3, MaxBatchBytes)}
		errs, err := p.Publish(context.Background(), in)
		if err != nil || len(errs) != 3 || errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], forward.ErrRejected) {
			t.Fatalf("Publish = %v, %v; want only the second rejected", errs, err)
		}
		checkDelivered(t, fake.requests(), []record.Record{in[0], in[2]})
	})
	t.Run("configured smaller limit", func(t *testing.T) {
		p, fake := newTest(t, Config{MaxBatchBytes: 256 << 10})
		var in []record.Record
		for i := range 4 {
			in = append(in, sizedRecord(t, uint64(i+1), 100_000))
		}
		if _, err := p.Publish(context.Background(), in); err != nil {
			t.Fatal(err)
		}
		if n := len(fake.requests()); n != 2 {
			t.Errorf("%d requests for 4 × 100,000 bytes under 256 KiB, want 2", n)
		}
	})
}

func TestPerEntryFailures(t *testing.T) {
	p, fake := newTest(t, Config{})
	fake.respond = func(in *awssqs.SendMessageBatchInput) (*awssqs.SendMessageBatchOutput, error) {
		out := &awssqs.SendMessageBatchOutput{}
		for _, e := range in.Entries {
			switch aws.ToString(e.Id) {
			case "1":
				out.Failed = append(out.Failed, types.BatchResultErrorEntry{Id: e.Id, Code: aws.String("InvalidParameterValue"), SenderFault: true, Message: aws.String("bad")})
			case "2":
				out.Failed = append(out.Failed, types.BatchResultErrorEntry{Id: e.Id, Code: aws.String("InternalError"), SenderFault: false})
			case "3":
				out.Failed = append(out.Failed, types.BatchResultErrorEntry{Id: e.Id, Code: aws.String("AWS.SimpleQueueService.RequestThrottled"), SenderFault: true})
			case "4":
				// neither in Successful nor in Failed
			default:
				out.Successful = append(out.Successful, types.SendMessageBatchResultEntry{Id: e.Id})
			}
		}
		return out, nil
	}
	errs, err := p.Publish(context.Background(), recs(6, []byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != 6 || errs[0] != nil || errs[5] != nil {
		t.Fatalf("errs = %v", errs)
	}
	var ee *EntryError
	if !errors.Is(errs[1], forward.ErrRejected) || !errors.As(errs[1], &ee) || !ee.SenderFault || ee.Code != "InvalidParameterValue" {
		t.Errorf("sender fault: %v", errs[1])
	}
	if errors.Is(errs[2], forward.ErrRejected) || errors.Is(errs[2], forward.ErrThrottled) || !errors.As(errs[2], &ee) || ee.SenderFault {
		t.Errorf("server fault must be transient: %v", errs[2])
	}
	if !errors.Is(errs[3], forward.ErrThrottled) || errors.Is(errs[3], forward.ErrRejected) {
		t.Errorf("throttled entry: %v", errs[3])
	}
	if errs[4] == nil || errors.Is(errs[4], forward.ErrRejected) {
		t.Errorf("entry missing from the response: %v", errs[4])
	}
}

func TestWholeCallErrors(t *testing.T) {
	cases := []struct {
		name      string
		err       error
		throttled bool
		rejected  bool
	}{
		{"RequestThrottled", &types.RequestThrottled{Message: aws.String("slow")}, true, false},
		{"KmsThrottled", &types.KmsThrottled{}, true, false},
		{"ThrottlingException", &smithy.GenericAPIError{Code: "ThrottlingException"}, true, false},
		{"BatchRequestTooLong", &types.BatchRequestTooLong{}, false, true},
		{"TooManyEntries", &types.TooManyEntriesInBatchRequest{}, false, true},
		{"InvalidMessageContents", &types.InvalidMessageContents{}, false, true},
		{"QueueDoesNotExist", &types.QueueDoesNotExist{}, false, false},
		{"AccessDenied", &smithy.GenericAPIError{Code: "AccessDenied", Fault: smithy.FaultClient}, false, false},
		{"network", errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, fake := newTest(t, Config{})
			fake.respond = func(*awssqs.SendMessageBatchInput) (*awssqs.SendMessageBatchOutput, error) { return nil, c.err }
			errs, err := p.Publish(context.Background(), recs(3, []byte(`{}`)))
			if errs != nil || err == nil {
				t.Fatalf("Publish = %v, %v; want a whole-call error", errs, err)
			}
			if errors.Is(err, forward.ErrThrottled) != c.throttled || errors.Is(err, forward.ErrRejected) != c.rejected {
				t.Errorf("err = %v: throttled %v rejected %v, want %v %v", err,
					errors.Is(err, forward.ErrThrottled), errors.Is(err, forward.ErrRejected), c.throttled, c.rejected)
			}
			if !errors.Is(err, c.err) {
				t.Errorf("err %v does not wrap the SDK error", err)
			}
		})
	}
	t.Run("context canceled", func(t *testing.T) {
		p, fake := newTest(t, Config{})
		fake.respond = func(*awssqs.SendMessageBatchInput) (*awssqs.SendMessageBatchOutput, error) {
			return nil, context.Canceled
		}
		if _, err := p.Publish(context.Background(), recs(1, []byte(`{}`))); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("one of two requests fails: per-record errors", func(t *testing.T) {
		p, fake := newTest(t, Config{})
		n := 0
		fake.respond = func(in *awssqs.SendMessageBatchInput) (*awssqs.SendMessageBatchOutput, error) {
			if n++; n == 2 {
				return nil, errors.New("connection reset")
			}
			return acceptAll(in), nil
		}
		errs, err := p.Publish(context.Background(), recs(12, []byte(`{}`)))
		if err != nil || len(errs) != 12 {
			t.Fatalf("Publish = %v, %v", errs, err)
		}
		for i, e := range errs {
			if (i >= 10) != (e != nil) {
				t.Errorf("errs[%d] = %v", i, e)
			}
		}
	})
}

func TestUnencodableRecordIsRejectedAlone(t *testing.T) {
	p, fake := newTest(t, Config{})
	in := recs(3, []byte(`{}`))
	in[1].ID = "dev\xff"
	errs, err := p.Publish(context.Background(), in)
	if err != nil || len(errs) != 3 || errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], forward.ErrRejected) {
		t.Fatalf("Publish = %v, %v", errs, err)
	}
	checkDelivered(t, fake.requests(), []record.Record{in[0], in[2]})
	// All refused: no call at all.
	fake.reqs = nil
	errs, err = p.Publish(context.Background(), []record.Record{in[1]})
	if err != nil || len(errs) != 1 || !errors.Is(errs[0], forward.ErrRejected) || len(fake.requests()) != 0 {
		t.Fatalf("Publish = %v, %v with %d calls", errs, err, len(fake.requests()))
	}
}

func TestFIFO(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"url suffix", Config{QueueURL: "https://sqs.eu-west-1.amazonaws.com/123456789012/coapgw.fifo"}},
		{"explicit", Config{QueueURL: stdURL, FIFO: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, fake := newTest(t, c.cfg)
			if !p.FIFO() {
				t.Fatal("not FIFO")
			}
			in := recs(3, []byte(`{}`))
			in[2].GW = strings.Repeat("g", 200) // too long for a deduplication id
			in[1].GW = "gw with spaces"         // characters not allowed in one
			if _, err := p.Publish(context.Background(), in); err != nil {
				t.Fatal(err)
			}
			es := fake.requests()[0].Entries
			if g, d := aws.ToString(es[0].MessageGroupId), aws.ToString(es[0].MessageDeduplicationId); g != "dev-1" || d != "gw-1-1" {
				t.Errorf("group %q dedup %q, want dev-1 and gw-1-1", g, d)
			}
			for i, e := range es[1:] {
				d := aws.ToString(e.MessageDeduplicationId)
				if len(d) > 128 || !validIDChars(d) || !strings.HasSuffix(d, "-"+strconv.Itoa(i+2)) {
					t.Errorf("substitute dedup id %q invalid", d)
				}
			}
			if fifoID(in[2].GW, "-3") != aws.ToString(es[2].MessageDeduplicationId) {
				t.Error("substitute dedup id not stable")
			}
		})
	}
	p, _ := newTest(t, Config{QueueURL: "https://sqs.us-east-1.amazonaws.com/123456789012/fifo-not"})
	if p.FIFO() {
		t.Error("a standard queue taken for FIFO")
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{QueueURL: "not a url"},
		{QueueURL: "ftp://x/q"},
		{QueueURL: "https://sqs.us-east-1.amazonaws.com/"},
		{QueueURL: stdURL, MaxBatchBytes: MaxBatchBytes + 1},
		{QueueURL: stdURL, MaxBatchBytes: -1},
	} {
		if _, err := newPublisher(cfg, &fakeSQS{}); err == nil {
			t.Errorf("newPublisher(%+v) succeeded", cfg)
		}
	}
	if _, err := New(Config{QueueURL: stdURL}, aws.Config{Region: "us-east-1"}); err != nil {
		t.Errorf("New: %v", err)
	}
}

func BenchmarkPublishBuild(b *testing.B) {
	p, _ := newPublisher(Config{QueueURL: stdURL}, &fakeSQS{respond: func(in *awssqs.SendMessageBatchInput) (*awssqs.SendMessageBatchOutput, error) {
		return acceptAll(in), nil
	}})
	in := recs(10, []byte(`{"temp":21.5,"hum":40,"bat":3.01,"rssi":-97}`))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Publish(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRegionFromURL(t *testing.T) {
	for url, want := range map[string]string{
		stdURL: "us-east-1",
		"https://sqs.eu-central-1.amazonaws.com/123456789012/q.fifo": "eu-central-1",
		"https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q":     "cn-north-1",
		"https://ap-southeast-2.queue.amazonaws.com/123456789012/q":  "ap-southeast-2",
		"http://127.0.0.1:4566/000000000000/q":                       "",
		"%":                                                          "",
	} {
		if got := RegionFromURL(url); got != want {
			t.Errorf("RegionFromURL(%q) = %q, want %q", url, got, want)
		}
	}
}

func TestNewFromDefaultConfigTakesTheRegionFromTheURL(t *testing.T) {
	dir := t.TempDir()
	for _, k := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", dir+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", dir+"/none")
	p, err := NewFromDefaultConfig(context.Background(), Config{QueueURL: "https://sqs.eu-west-3.amazonaws.com/123456789012/q"})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.api.(*awssqs.Client).Options().Region; got != "eu-west-3" {
		t.Errorf("region %q, want eu-west-3", got)
	}
	t.Setenv("AWS_REGION", "us-west-2")
	p, err = NewFromDefaultConfig(context.Background(), Config{QueueURL: "https://sqs.eu-west-3.amazonaws.com/123456789012/q"})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.api.(*awssqs.Client).Options().Region; got != "us-west-2" {
		t.Errorf("region %q, want the configured us-west-2", got)
	}
}
