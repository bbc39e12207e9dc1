package awsiot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/coapgw/coapgw/internal/jsonscan"
	"github.com/coapgw/coapgw/internal/processor"
)

// Ordered mode (Config.Ordered): the queue is FIFO with one message group per thing, so SQS hands
// a thing's records to one consumer at a time, in the order they were sent. Every batch is then
// written as it is — a blind JSON merge patch of the batch's coalesced properties, no version,
// no read — and the reported state holds only the devices' properties. coapgw's own bookkeeping
// (the thing type it checked or created) lives in the thing's named shadow RegistryShadow, read
// once per thing per consumer (GetThingShadow) and written once per thing.

// RegistryShadow is the named shadow where an ordered sink records that a thing exists and its
// type: {"state":{"reported":{"type":"meter"}}}, plus "adopted":true for a thing that existed
// before coapgw saw it (Config.AdoptThings).
const RegistryShadow = "coapgw"

// known is what an ordered sink remembers of a thing.
type known struct {
	typ     string // its thing type ("" = none)
	adopted bool   // it existed before coapgw saw it and is used as it is
}

// knownThing returns what the sink knows of a thing, making sure it exists: from the cache, else
// from its registry shadow, else by creating it. A *permanentError says it cannot be used.
func (s *Sink) knownThing(ctx context.Context, typ, name string) (known, error) {
	if k, ok := s.known.Get(name); ok {
		s.m.cacheHit.Inc()
		return k, s.checkType(name, typ, k)
	}
	s.m.cacheMiss.Inc()
	out, err := s.data.GetThingShadow(ctx, &GetThingShadowInput{ThingName: name, ShadowName: RegistryShadow})
	switch {
	case err == nil:
		s.m.call("GetThingShadow", nil)
		var doc struct {
			State struct {
				Reported struct {
					Type    *string `json:"type"`
					Adopted bool    `json:"adopted"`
				} `json:"reported"`
			} `json:"state"`
		}
		if jerr := json.Unmarshal(out.Payload, &doc); jerr == nil && doc.State.Reported.Type != nil {
			k := known{typ: *doc.State.Reported.Type, adopted: doc.State.Reported.Adopted}
			s.known.Add(name, k)
			return k, s.checkType(name, typ, k)
		}
		s.log.Warn("registry shadow unreadable; checking the registry", "thing", name, "shadow", RegistryShadow)
	case hasCode(err, "ResourceNotFoundException"):
		s.m.call("GetThingShadow", nil)
	default:
		s.m.call("GetThingShadow", err)
		return known{}, fmt.Errorf("get shadow %s of %s: %w", RegistryShadow, name, classify(err))
	}
	return s.register(ctx, typ, name)
}

// register makes sure a thing exists (creating its type and itself if needed) and records it in
// its registry shadow.
func (s *Sink) register(ctx context.Context, typ, name string) (known, error) {
	if err := s.ensureType(ctx, typ); err != nil {
		return known{}, err
	}
	actual, err := s.createThing(ctx, name, typ)
	if err != nil {
		return known{}, err
	}
	k := known{typ: actual, adopted: actual != typ && s.cfg.AdoptThings}
	if err := s.checkType(name, typ, k); err != nil {
		// Not coapgw's: remember the refusal here, write nothing into the thing.
		s.known.Add(name, k)
		return k, err
	}
	body := []byte(`{"state":{"reported":{"type":`)
	body = jsonscan.AppendQuoted(body, k.typ)
	if k.adopted {
		body = append(body, `,"adopted":true`...)
	}
	body = append(body, "}}}"...)
	_, err = s.data.UpdateThingShadow(ctx, &UpdateThingShadowInput{ThingName: name, ShadowName: RegistryShadow, Payload: body})
	s.m.call("UpdateThingShadow", err)
	if err != nil {
		return known{}, rejected("record thing "+name+" in its shadow "+RegistryShadow, err)
	}
	s.known.Add(name, k)
	return k, nil
}

// checkType refuses a record of type typ for thing name known as k, unless it was adopted.
func (s *Sink) checkType(name, typ string, k known) error {
	if k.typ == typ || k.adopted || s.cfg.AdoptThings {
		return nil
	}
	return conflict(name, k.typ)
}

// writeOrdered sends one thing's coalesced live records as a blind merge patch of the classic
// shadow. It returns only transient errors; permanent ones set the records aside.
func (s *Sink) writeOrdered(ctx context.Context, b *processor.Batch, u *processor.Update, live []int, out []processor.Outcome, pub *publishState) error {
	if s.wasWritten(b, u.Thing) {
		for _, i := range live {
			out[i] = processor.Outcome{Result: processor.Applied}
		}
		return nil
	}
	patch := u.Doc
	if len(live) != len(u.Items) {
		patch = b.Coalesce(append([]int(nil), live...))
	}
	if reason := patch.CheckLimits(); reason != "" {
		for _, i := range live {
			out[i] = setAside(reason)
		}
		s.m.setAside.WithLabelValues("shadow_limit").Add(float64(len(live)))
		return nil
	}
	if rejected, err := s.publishLive(ctx, b, live, out, pub); err != nil || rejected {
		return err
	}
	bodies := make([][]byte, 0, 2)
	if clear, ok := appendClears(nil, patch.Root(), true); ok {
		// An object replaced within the batch: delete it first, a merge cannot drop its members.
		bodies = append(bodies, wrapReported(clear))
	}
	bodies = append(bodies, wrapReported(appendBlind(make([]byte, 0, 64+patch.Size()), patch.Root(), true)))
	for _, body := range bodies {
		_, err := s.data.UpdateThingShadow(ctx, &UpdateThingShadowInput{ThingName: u.Thing, Payload: body})
		s.m.call("UpdateThingShadow", err)
		if err == nil {
			continue
		}
		err = classify(err)
		var pe *permanentError
		if errors.As(err, &pe) {
			reason := "AWS IoT rejected the shadow update: " + pe.reason
			for _, i := range live {
				out[i] = setAside(reason)
			}
			s.m.setAside.WithLabelValues("rejected").Add(float64(len(live)))
			return nil
		}
		return fmt.Errorf("update shadow of %s: %w", u.Thing, err)
	}
	for _, i := range live {
		if out[i].Result == 0 {
			out[i] = processor.Outcome{Result: processor.Applied}
		}
	}
	s.markWritten(b, u.Thing)
	return nil
}

// wasWritten reports whether thing's records of batch b were written by an earlier Apply of b.
func (s *Sink) wasWritten(b *processor.Batch, thing string) bool {
	s.writtenMu.Lock()
	defer s.writtenMu.Unlock()
	return s.writtenBatch == b && s.written[thing]
}

// markWritten remembers that thing's records of batch b are written (only for the latest batch).
func (s *Sink) markWritten(b *processor.Batch, thing string) {
	s.writtenMu.Lock()
	defer s.writtenMu.Unlock()
	if s.writtenBatch != b {
		s.writtenBatch, s.written = b, make(map[string]bool)
	}
	s.written[thing] = true
}

func wrapReported(members []byte) []byte {
	b := make([]byte, 0, len(members)+24)
	b = append(b, `{"state":{"reported":{`...)
	b = append(b, members...)
	return append(b, "}}}"...)
}

// appendBlind appends the members of the object n as a merge patch: values as they are,
// deletions as null, objects recursively.
func appendBlind(b []byte, n processor.Node, first bool) []byte {
	for i := range n.Len() {
		m := n.Member(i)
		if m.Kind() == processor.ObjectNode && m.Len() == 0 {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = jsonscan.AppendQuoted(b, m.Key())
		b = append(b, ':')
		switch m.Kind() {
		case processor.ObjectNode:
			b = append(b, '{')
			b = appendBlind(b, m, true)
			b = append(b, '}')
		case processor.ValueNode:
			b = append(b, m.Value()...)
		default:
			b = append(b, "null"...)
		}
	}
	return b
}

// appendClears appends a merge patch deleting every object of n that has a floor (deleted, then
// written again, within the batch); ok reports whether there is one.
func appendClears(b []byte, n processor.Node, first bool) ([]byte, bool) {
	wrote := false
	for i := range n.Len() {
		m := n.Member(i)
		if m.Kind() != processor.ObjectNode {
			continue
		}
		mark := len(b)
		if !first {
			b = append(b, ',')
		}
		b = jsonscan.AppendQuoted(b, m.Key())
		if m.Time() != 0 {
			b = append(b, ":null"...)
		} else {
			b = append(b, ":{"...)
			var below bool
			if b, below = appendClears(b, m, true); !below {
				b = b[:mark]
				continue
			}
			b = append(b, '}')
		}
		first, wrote = false, true
	}
	return b, wrote
}
