package awsiot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"

	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/processor"
)

// publishState remembers which records of a batch were published, so that the processor's
// retry of the same batch after a transient failure does not publish them again.
type publishState struct {
	mu   *sync.Mutex
	done []bool
}

func (s *Sink) publishState(b *processor.Batch) *publishState {
	if s.cfg.PublishTopic == "" {
		return nil
	}
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if s.pubBatch != b {
		s.pubBatch, s.pubDone = b, make([]bool, len(b.Items))
	}
	return &publishState{mu: &s.pubMu, done: s.pubDone}
}

func (s *Sink) publishDone(b *processor.Batch) {
	if s.cfg.PublishTopic == "" {
		return
	}
	s.pubMu.Lock()
	if s.pubBatch == b {
		s.pubBatch, s.pubDone = nil, nil
	}
	s.pubMu.Unlock()
}

// maxPublishBytes is the largest MQTT message AWS IoT takes (128 KB).
const maxPublishBytes = 128 << 10

// publishLive publishes the live records of one thing; a permanent rejection of the publish
// (Publish has no batch form: one message per call) sets them aside and reports rejected.
func (s *Sink) publishLive(ctx context.Context, b *processor.Batch, live []int, out []processor.Outcome, pub *publishState) (rejected bool, err error) {
	err = s.publish(ctx, b, live, pub)
	var pe *permanentError
	if !errors.As(err, &pe) {
		return false, err
	}
	for _, i := range live {
		out[i] = setAside(pe.reason)
	}
	s.m.setAside.WithLabelValues(pe.label).Add(float64(len(live)))
	return true, nil
}

// publish sends the records live (not yet published in this batch) to the publish topic: one
// message per record, or with PublishPack one message per topic holding {"records":[…]} (split
// at 128 KB).
func (s *Sink) publish(ctx context.Context, b *processor.Batch, live []int, pub *publishState) error {
	if pub == nil {
		return nil
	}
	var (
		topic string
		pack  []byte
		held  []int // the records in pack
	)
	flush := func() error {
		if len(held) == 0 {
			return nil
		}
		pack = append(pack, "]}"...)
		if err := s.publishOne(ctx, topic, pack); err != nil {
			return err
		}
		pub.mark(held)
		pack, held = pack[:0], held[:0]
		return nil
	}
	for _, i := range live {
		if pub.isDone(i) {
			continue
		}
		rec := &b.Items[i].Record
		body, err := envelope.Encode(*rec)
		if err != nil {
			return fmt.Errorf("publish record %s/%d: %w", rec.GW, rec.Seq, err)
		}
		t := strings.NewReplacer("{type}", rec.Type, "{thing}", rec.ID).Replace(s.cfg.PublishTopic)
		if !s.cfg.PublishPack {
			if err := s.publishOne(ctx, t, []byte(body)); err != nil {
				return err
			}
			pub.mark([]int{i})
			continue
		}
		if t != topic || len(pack)+len(body)+3 > maxPublishBytes {
			if err := flush(); err != nil {
				return err
			}
			topic = t
		}
		if len(held) == 0 {
			pack = append(pack, `{"records":[`...)
		} else {
			pack = append(pack, ',')
		}
		pack = append(pack, body...)
		held = append(held, i)
	}
	return flush()
}

// publishOne makes one Publish call. AWS's refusal of the message (a 4xx other than
// throttling: a topic the policy denies, a message too large) is a *permanentError: the records
// are set aside rather than holding every batch back; throttling and 5xx stay transient.
func (s *Sink) publishOne(ctx context.Context, topic string, payload []byte) error {
	_, err := s.data.Publish(ctx, &PublishInput{Topic: topic, Payload: payload, Qos: 1})
	s.m.call("Publish", err)
	if err == nil {
		return nil
	}
	var re *awshttp.ResponseError
	if deferral(err) == nil && errors.As(err, &re) && re.HTTPStatusCode() >= 400 && re.HTTPStatusCode() < 500 {
		return &permanentError{reason: fmt.Sprintf("AWS IoT rejected the publish to %s: %v", topic, err), label: "publish_rejected", err: err}
	}
	return fmt.Errorf("publish to %s: %w", topic, err)
}

func (p *publishState) isDone(i int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done[i]
}

func (p *publishState) mark(is []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, i := range is {
		p.done[i] = true
	}
}
