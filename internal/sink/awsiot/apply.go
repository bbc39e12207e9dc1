package awsiot

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/coapgw/coapgw/internal/processor"
)

// Apply implements processor.Sink. Things are updated concurrently (Config.Concurrency); any
// transient failure fails the call after the others finished, and what succeeded is remembered,
// so the retry of the batch only redoes what failed. Throttling and the context's deadline are
// not failures of the batch: the records of the things concerned are deferred
// (processor.Deferred), the others keep their outcomes.
func (s *Sink) Apply(ctx context.Context, b *processor.Batch) ([]processor.Outcome, error) {
	out := make([]processor.Outcome, len(b.Items))
	for i := range b.Items {
		if err := b.Items[i].Err; err != nil {
			out[i] = processor.Outcome{Result: processor.SetAside, Reason: err.Error()}
		}
	}
	pub := s.publishState(b)
	// The processor groups by (type, thing); one thing's updates run in order in one goroutine.
	var (
		order  []string
		groups = make(map[string][]int, len(b.Updates))
	)
	for i := range b.Updates {
		name := b.Updates[i].Thing
		if _, ok := groups[name]; !ok {
			order = append(order, name)
		}
		groups[name] = append(groups[name], i)
	}
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, s.cfg.Concurrency)
	)
	run := func(name string) {
		l := s.thingLock(name)
		l.Lock()
		defer l.Unlock()
		ups := groups[name]
		for k, ui := range ups {
			if err := s.update(ctx, b, &b.Updates[ui], out, pub); err != nil {
				if de := deferral(err); de != nil && ctx.Err() == nil {
					// This thing's records go back to the queue; the batch goes on.
					s.deferThing(b, ups[k:], out, de)
					return
				}
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return // deferred below, with the things not started
				}
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				return
			}
		}
	}
	if len(order) == 1 {
		run(order[0])
	} else {
		for _, name := range order {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				run(name)
			}()
		}
		wg.Wait()
	}
	if first == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// Out of time (a Lambda invocation's deadline, a worker batch's): what was applied
		// stays applied, the rest is handed back, so that only it comes back.
		de := &deferredError{label: "deadline", reason: "the batch's deadline passed before this thing was written"}
		for _, name := range order {
			s.deferThing(b, groups[name], out, de)
		}
		return out, nil
	}
	if first == nil {
		first = ctx.Err()
	}
	if first != nil {
		return nil, first
	}
	s.publishDone(b)
	return out, nil
}

// refuse sets the live records aside if err is permanent, else returns it.
func (s *Sink) refuse(err error, live []int, out []processor.Outcome) error {
	var pe *permanentError
	if !errors.As(err, &pe) {
		return err
	}
	for _, i := range live {
		out[i] = setAside(pe.reason)
	}
	s.m.setAside.WithLabelValues(pe.label).Add(float64(len(live)))
	return nil
}

func setAside(reason string) processor.Outcome {
	return processor.Outcome{Result: processor.SetAside, Reason: reason}
}

// update applies one thing's coalesced records. It returns only transient errors; permanent
// ones set the records aside.
func (s *Sink) update(ctx context.Context, b *processor.Batch, u *processor.Update, out []processor.Outcome, pub *publishState) error {
	live := append([]int(nil), u.Items...)
	if s.cfg.Ordered {
		if _, err := s.knownThing(ctx, u.Type, u.Thing); err != nil {
			return s.refuse(err, live, out)
		}
		return s.writeOrdered(ctx, b, u, live, out, pub)
	}
	if reserved(u.Doc) {
		live = live[:0]
		for _, i := range u.Items {
			if reserved(b.Items[i].Doc) {
				out[i] = setAside(fmt.Sprintf("property %q is reserved for coapgw", ReservedKey))
				s.m.setAside.WithLabelValues("reserved_key").Inc()
				continue
			}
			live = append(live, i)
		}
		if len(live) == 0 {
			return nil
		}
	}
	th, err := s.thing(ctx, u.Type, u.Thing)
	if err != nil {
		return s.refuse(err, live, out)
	}
	for attempt := 0; ; attempt++ {
		done, err := s.write(ctx, b, u, th, live, out, pub)
		if done || err != nil {
			return err
		}
		// A version conflict: someone else wrote the shadow. Read it and merge again.
		s.m.conflicts.Inc()
		if attempt >= s.cfg.ConflictRetries {
			return fmt.Errorf("update shadow of %s: version conflict persists after %d re-reads", u.Thing, attempt)
		}
		fresh, err := s.loadShadow(ctx, u.Thing)
		if err != nil {
			return err
		}
		fresh.typ = th.typ
		th = fresh
		s.things.Add(u.Thing, th)
	}
}
