package forward_test

// End-to-end tests of spool → forwarder → SQS publisher → moto's SQS, with the real SDK over real
// HTTP on loopback. They live in an external test package because queue/sqs imports forward.

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgw/coapgw/internal/awstest"
	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/forward"
	"github.com/coapgw/coapgw/internal/queue/sqs"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
)

const gwID = "gw-moto"

// motoPayload is record i's payload: JSON objects and arrays, binary, empty, and every 50th one
// of 8 KiB (the default payload cap).
func motoPayload(i int) []byte {
	if i%50 == 3 {
		return append(append([]byte(`{"blob":"`), bytes.Repeat([]byte{'a' + byte(i%26)}, 8180)...), `"}`...)
	}
	switch i % 5 {
	case 0:
		return fmt.Appendf(nil, `{"temp":%d.5,"i":%d}`, i%40, i)
	case 1:
		rng := rand.New(rand.NewPCG(uint64(i), 1))
		b := make([]byte, 1+rng.IntN(300))
		for k := range b {
			b[k] = byte(rng.Uint32())
		}
		return b
	case 2:
		return nil
	case 3:
		return fmt.Appendf(nil, `text payload %d`, i)
	default:
		return fmt.Appendf(nil, `[{"n":"temp","v":%d}]`, i)
	}
}

func motoRecord(i int) record.Record {
	return record.Record{GW: gwID, ReceivedAt: time.Now().UTC(), Type: "sensor",
		ID: "dev-" + strconv.Itoa(i%50), ContentFormat: 50, Payload: motoPayload(i), Peer: "127.0.0.1:5683"}
}

// ledger remembers what was appended, by seq.
type ledger struct {
	mu   sync.Mutex
	recs map[uint64]record.Record
	last uint64
}

func (l *ledger) get(seq uint64) (record.Record, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.recs[seq]
	return r, ok
}

func (l *ledger) size() (int, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs), l.last
}

// appendN appends records from..from+n-1 and waits until they are durable.
func appendN(sp spool.Log, l *ledger, from, n int) error {
	var wg sync.WaitGroup
	var failed atomic.Value
	for i := from; i < from+n; i++ {
		r := motoRecord(i)
		b, err := record.Append(nil, &r)
		if err != nil {
			return err
		}
		wg.Add(1)
		err = sp.Append(b, func(seq uint64, err error) {
			defer wg.Done()
			if err != nil {
				failed.Store(err)
				return
			}
			l.mu.Lock()
			r.Seq = seq
			l.recs[seq] = r
			l.last = max(l.last, seq)
			l.mu.Unlock()
		})
		if err != nil {
			wg.Done()
			wg.Wait()
			return fmt.Errorf("append: %w", err)
		}
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return fmt.Errorf("append: %w", err)
	}
	return nil
}

// consumer receives and deletes messages, counting each (gw, seq) and checking it against the
// ledger. Moto's SendMessage costs time proportional to the messages in the queue, so tests drain
// the queue while they forward, as the processor would.
type consumer struct {
	t      testing.TB
	client *awssqs.Client
	url    string
	l      *ledger

	mu     sync.Mutex
	got    map[uint64]int  // distinct messages (MessageIds) received per seq
	ids    map[string]bool // MessageIds seen: SQS may deliver a message more than once
	errs   int
	paused atomic.Bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

func newConsumer(t testing.TB, client *awssqs.Client, url string, l *ledger) *consumer {
	return &consumer{t: t, client: client, url: url, l: l, got: map[uint64]int{}, ids: map[string]bool{}, stop: make(chan struct{})}
}

// start runs n receiving goroutines until the test ends.
func (c *consumer) start(ctx context.Context, n int) {
	for range n {
		c.wg.Go(func() {
			for {
				select {
				case <-c.stop:
					return
				default:
				}
				if c.paused.Load() {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				// Long polling: an empty receive would cost moto as much CPU as a send.
				if _, err := c.poll(ctx, 1); err != nil {
					c.mu.Lock()
					c.errs++
					c.mu.Unlock()
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	c.t.Cleanup(func() { close(c.stop); c.wg.Wait() })
}

// received reports how many records arrived and how many extra messages (a record sent more than
// once, under another MessageId) came; redeliveries of one message are not counted.
func (c *consumer) received() (distinct, dups int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.got {
		if n > 1 {
			dups += n - 1
		}
	}
	return len(c.got), dups
}

// consumerVisibility is the consumers' visibility timeout, in seconds. A message whose delete
// failed, or whose receive answer was lost (moto under load), is in flight until it expires and is
// then received again; waiting for an empty queue must allow for that.
const consumerVisibility = 30

// poll does one ReceiveMessage + DeleteMessageBatch round; it returns how many messages came.
func (c *consumer) poll(ctx context.Context, wait int32) (int, error) {
	out, err := c.client.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{
		QueueUrl: &c.url, MaxNumberOfMessages: 10, WaitTimeSeconds: wait,
		MessageAttributeNames: []string{"All"}, VisibilityTimeout: consumerVisibility,
	})
	if err != nil {
		return 0, err
	}
	var del []types.DeleteMessageBatchRequestEntry
	for i, m := range out.Messages {
		rec, err := envelope.Decode(aws.ToString(m.Body))
		if err != nil {
			c.t.Errorf("message does not decode: %v", err)
			continue
		}
		want, ok := c.l.get(rec.Seq)
		switch {
		case rec.GW != gwID || !ok:
			c.t.Errorf("unexpected message (%s, %d)", rec.GW, rec.Seq)
		case !bytes.Equal(rec.Payload, want.Payload) || rec.ID != want.ID || !rec.ReceivedAt.Equal(want.ReceivedAt):
			c.t.Errorf("record %d changed in transit", rec.Seq)
		case aws.ToString(m.MessageAttributes[envelope.AttrThing].StringValue) != want.ID ||
			aws.ToString(m.MessageAttributes[envelope.AttrType].StringValue) != want.Type:
			c.t.Errorf("record %d: attributes %v", rec.Seq, m.MessageAttributes)
		}
		c.mu.Lock()
		if id := aws.ToString(m.MessageId); !c.ids[id] {
			c.ids[id] = true
			c.got[rec.Seq]++
		}
		c.mu.Unlock()
		del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
	}
	if len(del) > 0 {
		if _, err := c.client.DeleteMessageBatch(ctx, &awssqs.DeleteMessageBatchInput{QueueUrl: &c.url, Entries: del}); err != nil {
			return len(out.Messages), err
		}
	}
	return len(out.Messages), nil
}

// queueEmpty reports whether the queue holds no message, visible or in flight.
func queueEmpty(ctx context.Context, client *awssqs.Client, url string) (bool, error) {
	out, err := client.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{QueueUrl: &url,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages, types.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		return false, err
	}
	return out.Attributes["ApproximateNumberOfMessages"] == "0" && out.Attributes["ApproximateNumberOfMessagesNotVisible"] == "0", nil
}

func waitUntil(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func runForwarder(t testing.TB, f *forward.Forwarder) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- f.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// 2,000 spool records reach moto's SQS queue exactly once, intact, in ≤ 1 SendMessageBatch per 10.
func TestMotoForwardsEveryRecordExactlyOnce(t *testing.T) {
	m := awstest.Start(t)
	ctx := t.Context()
	url := m.CreateQueue(ctx, "coapgw-e2e", nil)
	cfg := m.AWSConfig(ctx)
	calls := awstest.CountCalls(&cfg)
	pub, err := sqs.New(sqs.Config{QueueURL: url}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	const n = 2000
	l := &ledger{recs: map[uint64]record.Record{}}
	if err := appendN(sp, l, 0, n); err != nil {
		t.Fatal(err)
	}
	_, last := l.size()

	c := newConsumer(t, awssqs.NewFromConfig(m.AWSConfig(ctx)), url, l)
	c.start(ctx, 2)
	reg := prometheus.NewRegistry()
	f, err := forward.New(forward.Config{}, sp, &shallow{Publisher: pub, c: c, limit: 40}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	stop := runForwarder(t, f)
	waitUntil(t, "every record committed", 120*time.Second, func() bool { return sp.Stats().CommittedSeq == last })
	elapsed := time.Since(begin)
	stop()

	batches := calls.Count("SendMessageBatch")
	t.Logf("forwarded %d records in %v (%.0f records/s, consumers draining) with %d SendMessageBatch calls (%d HTTP attempts), mean call %v",
		n, elapsed.Round(time.Millisecond), n/elapsed.Seconds(), batches, calls.Attempts("SendMessageBatch"), meanBatch(t, reg))
	if batches == 0 || batches > n/10 {
		t.Errorf("%d SendMessageBatch calls for %d records: want between 1 and 1 per 10", batches, n)
	}
	if st := sp.Stats(); st.Depth != 0 {
		t.Errorf("spool depth %d after forwarding everything", st.Depth)
	}
	waitUntil(t, "every record received", 120*time.Second, func() bool { d, _ := c.received(); return d == n })
	waitUntil(t, "the queue empty", (2*consumerVisibility+10)*time.Second, func() bool {
		empty, err := queueEmpty(ctx, c.client, url)
		return err == nil && empty
	})
	if distinct, dups := c.received(); distinct != n || dups != 0 {
		t.Fatalf("received %d distinct records (%d duplicates), want %d exactly once", distinct, dups, n)
	}
	if got := metricValue(t, reg, "coapgw_forward_records_total", "sent"); got != n {
		t.Errorf("sent = %v", got)
	}
}

// pausable wraps a Publisher so a test can hold new calls and wait for the ones in flight.
type pausable struct {
	forward.Publisher
	mu       sync.Mutex
	cond     *sync.Cond
	paused   bool
	inflight int
}

func newPausable(p forward.Publisher) *pausable {
	g := &pausable{Publisher: p}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *pausable) Publish(ctx context.Context, recs []record.Record) ([]error, error) {
	g.mu.Lock()
	for g.paused {
		g.cond.Wait()
	}
	g.inflight++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inflight--
		g.cond.Broadcast()
		g.mu.Unlock()
	}()
	return g.Publisher.Publish(ctx, recs)
}

// pause holds new calls and waits until none is in flight.
func (g *pausable) pause() {
	g.mu.Lock()
	g.paused = true
	for g.inflight > 0 {
		g.cond.Wait()
	}
	g.mu.Unlock()
}

func (g *pausable) resume() {
	g.mu.Lock()
	g.paused = false
	g.cond.Broadcast()
	g.mu.Unlock()
}

// shallow wraps a Publisher so that at most limit messages sit in moto's queue: moto spends time
// proportional to the queue's depth on every message it takes or hands out, so a deep queue makes
// it slower and slower (real SQS does not care). The forwarder is unchanged; its calls just wait
// for the consumers.
type shallow struct {
	forward.Publisher
	c        *consumer
	limit    int
	accepted atomic.Int64
}

func (s *shallow) Publish(ctx context.Context, recs []record.Record) ([]error, error) {
	for {
		got, _ := s.c.received()
		if s.accepted.Load()-int64(got) < int64(s.limit) || ctx.Err() != nil {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	errs, err := s.Publisher.Publish(ctx, recs)
	if err == nil {
		n := 0
		for _, e := range errs {
			if e == nil {
				n++
			}
		}
		if errs == nil {
			n = len(recs)
		}
		s.accepted.Add(int64(n))
	}
	return errs, err
}

// Moto goes away while records keep arriving: the cursor stays put and the spool keeps everything;
// moto comes back (its queue recreated) and everything drains, lost = 0, duplicates = 0.
//
// Moto forgets its queues when it stops, so messages it held at that moment would be lost by the
// emulator, not by the gateway. To keep the accounting exact the test quiesces the publisher for
// the instant of the stop (no call in flight, the consumers have drained the queue); the records
// keep coming and the forwarder keeps running through the outage.
func TestMotoOutage(t *testing.T) {
	m := awstest.Start(t)
	ctx := t.Context()
	const queueName = "coapgw-outage"
	url := m.CreateQueue(ctx, queueName, nil)
	inner, err := sqs.New(sqs.Config{QueueURL: url}, m.AWSConfig(ctx))
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	l := &ledger{recs: map[uint64]record.Record{}}
	c := newConsumer(t, awssqs.NewFromConfig(m.AWSConfig(ctx)), url, l)
	c.start(ctx, 2)
	pub := newPausable(&shallow{Publisher: inner, c: c, limit: 40})
	reg := prometheus.NewRegistry()
	f, err := forward.New(forward.Config{BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, CommitInterval: 10 * time.Millisecond}, sp, pub, nil, reg)
	if err != nil {
		t.Fatal(err)
	}

	// Devices: 10 records every 10 ms until told to stop, before, during and after the outage.
	stopProducing := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; ; i += 10 {
			select {
			case <-stopProducing:
				return
			default:
			}
			if err := appendN(sp, l, i, 10); err != nil {
				t.Errorf("producer: %v", err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	var stopOnce sync.Once
	endProducer := func() { stopOnce.Do(func() { close(stopProducing); <-produced }) }
	t.Cleanup(endProducer)

	stopFwd := runForwarder(t, f)
	waitUntil(t, "300 records committed", 60*time.Second, func() bool { return sp.Stats().CommittedSeq >= 300 })

	// Quiesce, drain, stop moto, let the forwarder run into the outage.
	pub.pause()
	waitUntil(t, "the consumers to drain the queue", 60*time.Second, func() bool {
		empty, err := queueEmpty(ctx, c.client, url)
		return err == nil && empty
	})
	c.paused.Store(true)
	// The cursor reaches the accepted prefix: everything the consumers have, contiguously.
	prefix := func() uint64 {
		c.mu.Lock()
		defer c.mu.Unlock()
		l.mu.Lock()
		defer l.mu.Unlock()
		var p uint64
		for s := uint64(1); s <= l.last; s++ {
			if _, ok := l.recs[s]; !ok {
				continue
			}
			if c.got[s] == 0 {
				break
			}
			p = s
		}
		return p
	}
	want := prefix()
	waitUntil(t, "the cursor at the accepted prefix", 10*time.Second, func() bool { return sp.Stats().CommittedSeq == want })
	m.Stop()
	pub.resume()
	c0 := sp.Stats().CommittedSeq
	nStop, _ := l.size()
	t.Logf("moto stopped: %d records appended, cursor at %d", nStop, c0)

	waitUntil(t, "failed calls during the outage", 60*time.Second, func() bool {
		return metricValue(t, reg, "coapgw_forward_call_errors_total", "unavailable") >= 2
	})
	outageEnd := time.Now().Add(2 * time.Second)
	for time.Now().Before(outageEnd) {
		if cur := sp.Stats().CommittedSeq; cur != c0 {
			t.Fatalf("cursor moved from %d to %d while moto was down", c0, cur)
		}
		// Every record past the cursor is still in the spool.
		l.mu.Lock()
		var past int64
		for s := range l.recs {
			if s > c0 {
				past++
			}
		}
		l.mu.Unlock()
		if st := sp.Stats(); st.Depth < past {
			t.Fatalf("spool depth %d but %d records were appended past the cursor %d", st.Depth, past, c0)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !f.Stats().Backoff {
		t.Error("forwarder not backing off during the outage")
	}
	nDown, _ := l.size()
	if nDown <= nStop {
		t.Errorf("no record appended during the outage (%d before, %d after)", nStop, nDown)
	}
	t.Logf("outage: %d records appended, spool depth %d, lag %v, %v whole-call failures, %.2fs of backoff waits",
		nDown, sp.Stats().Depth, f.Stats().Lag.Round(time.Millisecond),
		metricValue(t, reg, "coapgw_forward_call_errors_total", "unavailable"),
		metricValue(t, reg, "coapgw_forward_backoff_seconds_total", ""))

	// Recovery: moto back on the same port, the queue recreated under the same URL.
	m.Restart()
	if again := m.CreateQueue(ctx, queueName, nil); again != url {
		t.Fatalf("queue URL changed across the restart: %s → %s", url, again)
	}
	c.paused.Store(false)
	time.Sleep(time.Second) // records keep coming after the recovery too
	endProducer()
	total, last := l.size()
	waitUntil(t, "every record committed after the restart", 120*time.Second, func() bool { return sp.Stats().CommittedSeq == last })
	stopFwd()
	waitUntil(t, "the consumers to receive everything", 60*time.Second, func() bool {
		d, _ := c.received()
		return d == total
	})
	waitUntil(t, "the queue empty (the last deletes done)", (2*consumerVisibility+10)*time.Second, func() bool {
		empty, err := queueEmpty(ctx, c.client, url)
		return err == nil && empty
	})
	distinct, dups := c.received()
	lost := total - distinct
	t.Logf("appended %d, received %d distinct, lost %d, duplicates %d", total, distinct, lost, dups)
	if lost != 0 || dups != 0 {
		t.Errorf("lost = %d, duplicates = %d; want 0 and 0", lost, dups)
	}
	if st := sp.Stats(); st.Depth != 0 {
		t.Errorf("spool depth %d at the end", st.Depth)
	}
}

// meanBatch is the mean duration of the forwarder's Publish calls.
func meanBatch(t testing.TB, reg *prometheus.Registry) time.Duration {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "coapgw_forward_batch_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() > 0 {
				return time.Duration(h.GetSampleSum() / float64(h.GetSampleCount()) * float64(time.Second)).Round(time.Microsecond)
			}
		}
	}
	return 0
}

// metricValue is the value of counter name (with a label of the given value, if label is not
// empty); 0 if it has not been created.
func metricValue(t testing.TB, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := label == ""
			for _, lp := range m.GetLabel() {
				ok = ok || lp.GetValue() == label
			}
			if ok {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// BenchmarkForwardMoto forwards b.N spool records to moto's SQS (2 goroutines draining the queue,
// as a processor would) and reports records/s and SendMessageBatch calls per 10 records. Moto, a
// Python process, is the bottleneck; the forwarder's own cost is BenchmarkForwardFake. Run it with
// a fixed count, e.g.
//
//	go test -run '^$' -bench ForwardMoto -benchtime 2000x ./internal/forward/
func BenchmarkForwardMoto(b *testing.B) {
	m := awstest.Start(b)
	ctx := context.Background()
	for _, conc := range []int{1, 4, 8} {
		b.Run("concurrency="+strconv.Itoa(conc), func(b *testing.B) {
			name := "coapgw-bench-" + strconv.Itoa(conc)
			url := m.CreateQueue(ctx, name, nil)
			cfg := m.AWSConfig(ctx)
			calls := awstest.CountCalls(&cfg)
			pub, err := sqs.New(sqs.Config{QueueURL: url}, cfg)
			if err != nil {
				b.Fatal(err)
			}
			sp, err := spool.Open(b.TempDir(), spool.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { sp.Close() })
			l := &ledger{recs: map[uint64]record.Record{}}
			if err := appendN(sp, l, 0, b.N); err != nil {
				b.Fatal(err)
			}
			_, last := l.size()
			c := newConsumer(b, awssqs.NewFromConfig(m.AWSConfig(ctx)), url, l)
			c.start(ctx, 2)
			f, err := forward.New(forward.Config{Concurrency: conc}, sp, &shallow{Publisher: pub, c: c, limit: 40}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			begin := time.Now()
			stop := runForwarder(b, f)
			waitUntil(b, "every record committed", 10*time.Minute, func() bool { return sp.Stats().CommittedSeq == last })
			elapsed := time.Since(begin)
			b.StopTimer()
			stop()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
			b.ReportMetric(float64(calls.Count("SendMessageBatch"))*10/float64(b.N), "calls/10rec")
		})
	}
}

// BenchmarkForwardFake measures the forwarder itself: a spool on disk and a publisher that accepts
// everything at once.
//
//	go test -run '^$' -bench ForwardFake -benchtime 200000x ./internal/forward/
func BenchmarkForwardFake(b *testing.B) {
	sp, err := spool.Open(b.TempDir(), spool.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sp.Close() })
	l := &ledger{recs: map[uint64]record.Record{}}
	if err := appendN(sp, l, 0, b.N); err != nil {
		b.Fatal(err)
	}
	_, last := l.size()
	f, err := forward.New(forward.Config{}, sp, acceptAll{}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	begin := time.Now()
	stop := runForwarder(b, f)
	waitUntil(b, "every record committed", 10*time.Minute, func() bool { return sp.Stats().CommittedSeq == last })
	elapsed := time.Since(begin)
	b.StopTimer()
	stop()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
}

type acceptAll struct{}

func (acceptAll) MaxBatch() int { return 10 }

func (acceptAll) Publish(context.Context, []record.Record) ([]error, error) { return nil, nil }

// BenchmarkForwardLatency shows what concurrent calls buy against a queue that answers in 20 ms
// (a typical SendMessageBatch round trip from EC2 in the same region): records/s ≈ Concurrency ×
// 10 / 20 ms.
//
//	go test -run '^$' -bench ForwardLatency -benchtime 4000x ./internal/forward/
func BenchmarkForwardLatency(b *testing.B) {
	for _, conc := range []int{1, 4, 16} {
		b.Run("concurrency="+strconv.Itoa(conc), func(b *testing.B) {
			sp, err := spool.Open(b.TempDir(), spool.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { sp.Close() })
			l := &ledger{recs: map[uint64]record.Record{}}
			if err := appendN(sp, l, 0, b.N); err != nil {
				b.Fatal(err)
			}
			_, last := l.size()
			f, err := forward.New(forward.Config{Concurrency: conc}, sp, slowAccept{20 * time.Millisecond}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			begin := time.Now()
			stop := runForwarder(b, f)
			waitUntil(b, "every record committed", 10*time.Minute, func() bool { return sp.Stats().CommittedSeq == last })
			elapsed := time.Since(begin)
			b.StopTimer()
			stop()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
		})
	}
}

type slowAccept struct{ d time.Duration }

func (slowAccept) MaxBatch() int { return 10 }

func (s slowAccept) Publish(ctx context.Context, recs []record.Record) ([]error, error) {
	select {
	case <-time.After(s.d):
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
