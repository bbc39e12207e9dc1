package awsiot

import (
	"context"
	"fmt"
	"strings"
	"sync"

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

// publish sends the records live (not yet published in this batch) to the publish topic.
func (s *Sink) publish(ctx context.Context, b *processor.Batch, live []int, pub *publishState) error {
	if pub == nil {
		return nil
	}
	for _, i := range live {
		pub.mu.Lock()
		done := pub.done[i]
		pub.mu.Unlock()
		if done {
			continue
		}
		rec := &b.Items[i].Record
		body, err := envelope.Encode(*rec)
		if err != nil {
			return fmt.Errorf("publish record %s/%d: %w", rec.GW, rec.Seq, err)
		}
		topic := strings.NewReplacer("{type}", rec.Type, "{thing}", rec.ID).Replace(s.cfg.PublishTopic)
		_, err = s.data.Publish(ctx, &PublishInput{Topic: topic, Payload: []byte(body), Qos: 1})
		s.m.call("Publish", err)
		if err != nil {
			// Even a rejected publish is transient: the topic or its policy is configuration
			// an operator fixes, not a reason to drop telemetry.
			return fmt.Errorf("publish to %s: %w", topic, err)
		}
		pub.mu.Lock()
		pub.done[i] = true
		pub.mu.Unlock()
	}
	return nil
}
