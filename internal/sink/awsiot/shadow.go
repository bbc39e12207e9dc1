package awsiot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/coapgw/coapgw/internal/jsonscan"
	"github.com/coapgw/coapgw/internal/processor"
)

// Shadow reads a thing's classic shadow (one GetThingShadow, not cached) and returns its
// reported state as compact JSON without coapgw's key, and its version; "" and 0 if the thing
// has no shadow.
func (s *Sink) Shadow(ctx context.Context, thing string) (string, int64, error) {
	th, err := s.loadShadow(ctx, thing)
	if err != nil {
		return "", 0, err
	}
	if th.version == 0 {
		return "", 0, nil
	}
	return string(th.doc.AppendState(nil)), th.version, nil
}

// write merges the live records into th's document and sends the change; done is false after a
// version conflict.
func (s *Sink) write(ctx context.Context, b *processor.Batch, u *processor.Update, th *thingState, live []int, out []processor.Outcome, pub *publishState) (done bool, err error) {
	patch := u.Doc
	if len(live) != len(u.Items) {
		patch = b.Coalesce(append([]int(nil), live...))
	}
	next := th.doc.Clone()
	if !next.Merge(patch) {
		for _, i := range live {
			out[i] = processor.Outcome{Result: processor.Duplicate}
		}
		s.m.unchanged.Inc()
		return true, s.publish(ctx, b, live, pub)
	}
	if reason := s.limits(next, th); reason != "" {
		// Find the records that do not fit, one by one, from the state before this batch.
		cur, changed := th.doc, false
		keep := make([]int, 0, len(live))
		for _, i := range live {
			c := cur.Clone()
			if !c.Merge(b.Items[i].Doc) {
				keep = append(keep, i)
				continue
			}
			if reason := s.limits(c, th); reason != "" {
				out[i] = setAside(reason)
				s.m.setAside.WithLabelValues("shadow_limit").Inc()
				continue
			}
			cur, changed = c, true
			keep = append(keep, i)
		}
		live, next = keep, cur
		if !changed {
			for _, i := range live {
				out[i] = processor.Outcome{Result: processor.Duplicate}
			}
			return true, s.publish(ctx, b, live, pub)
		}
	}
	if err := s.publish(ctx, b, live, pub); err != nil {
		return false, err
	}
	body := s.updateBody(th, next)
	resp, err := s.data.UpdateThingShadow(ctx, &UpdateThingShadowInput{ThingName: u.Thing, Payload: body})
	s.m.call("UpdateThingShadow", err)
	if err != nil {
		if hasCode(err, "ConflictException") {
			return false, nil
		}
		err = classify(err)
		var pe *permanentError
		if errors.As(err, &pe) {
			reason := "AWS IoT rejected the shadow update: " + pe.reason
			for _, i := range live {
				out[i] = setAside(reason)
			}
			s.m.setAside.WithLabelValues("rejected").Add(float64(len(live)))
			return true, nil
		}
		return false, fmt.Errorf("update shadow of %s: %w", u.Thing, err)
	}
	var doc struct{ Version int64 }
	if err := json.Unmarshal(resp.Payload, &doc); err != nil || doc.Version == 0 {
		// The update is in; without its version the next one must re-read the shadow.
		s.things.Remove(u.Thing)
		s.log.Warn("shadow update response without a version", "thing", u.Thing, "err", err)
	} else {
		s.things.Add(u.Thing, &thingState{typ: th.typ, version: doc.Version, doc: compact(next), desired: th.desired})
	}
	// Each record: applied if it changed the state before this batch, else a duplicate.
	for _, i := range live {
		if out[i].Result != 0 {
			continue
		}
		if len(live) > 1 && !th.doc.Clone().Merge(b.Items[i].Doc) {
			out[i] = processor.Outcome{Result: processor.Duplicate}
			continue
		}
		out[i] = processor.Outcome{Result: processor.Applied}
	}
	return true, nil
}

// compact returns a copy of d that shares no memory with the batch it was merged from (whose
// values would keep whole decoded payloads alive in the cache): its values in one buffer.
func compact(d *processor.Doc) *processor.Doc {
	bin := d.AppendBinary(nil)
	c := processor.NewDoc()
	if err := c.UnmarshalBinary(append(make([]byte, 0, len(bin)), bin...)); err != nil {
		return d
	}
	return c
}

// meta is the value of the reserved key.
type meta struct {
	V      int    `json:"v"`
	Type   string `json:"type"`
	Stamps string `json:"t"`
}

// metaJSON is the value of the reserved key for a thing of type typ whose state is d.
func metaJSON(typ string, d *processor.Doc) []byte {
	b := fmt.Appendf(nil, `{"v":%d,"type":`, stampsVersion)
	b = jsonscan.AppendQuoted(b, typ)
	b = append(b, `,"t":"`...)
	b = append(b, encodeStamps(d)...)
	return append(b, `"}`...)
}

// updateBody is the UpdateThingShadow document turning th's state into next: the merge patch,
// the reserved key, and th's version when the shadow exists.
func (s *Sink) updateBody(th *thingState, next *processor.Doc) []byte {
	b := make([]byte, 0, 256+next.Size())
	b = append(b, `{"state":{"reported":{`...)
	b, wrote := appendPatch(b, th.doc, next, true)
	if wrote {
		b = append(b, ',')
	}
	b = jsonscan.AppendQuoted(b, ReservedKey)
	b = append(b, ':')
	b = append(b, metaJSON(th.typ, next)...)
	b = append(b, "}}"...)
	if th.version > 0 {
		b = append(b, `,"version":`...)
		b = fmt.Appendf(b, "%d", th.version)
	}
	return append(b, '}')
}

// limits checks a thing's state d against the shadow limits, the reserved key included: AWS
// counts the whole state document toward its size limit, the desired state (as last read) too.
func (s *Sink) limits(d *processor.Doc, th *thingState) string {
	typ := th.typ
	if reason := d.CheckLimits(); reason != "" {
		return reason
	}
	size := d.Size() + len(ReservedKey) + 3 + len(metaJSON(typ, d)) // "key":meta
	if !d.Empty() {
		size++ // the comma
	}
	if th.desired > 0 {
		size += th.desired
	}
	if size > processor.MaxShadowBytes {
		return fmt.Sprintf("shadow would be %d bytes with coapgw's per-property times and the desired state (%d bytes), over the %d-byte limit", size, th.desired, processor.MaxShadowBytes)
	}
	return ""
}

// reserved reports whether a document writes the reserved key.
func reserved(d *processor.Doc) bool {
	if d == nil {
		return false
	}
	_, ok := d.Root().Find(ReservedKey)
	return ok
}

// loadShadow reads a thing's shadow into a thingState (type from coapgw's key, if any).
func (s *Sink) loadShadow(ctx context.Context, name string) (*thingState, error) {
	out, err := s.data.GetThingShadow(ctx, &GetThingShadowInput{ThingName: name})
	if err != nil && hasCode(err, "ResourceNotFoundException") {
		s.m.call("GetThingShadow", nil)
		return &thingState{doc: processor.NewDoc()}, nil
	}
	s.m.call("GetThingShadow", err)
	if err != nil {
		return nil, fmt.Errorf("get shadow of %s: %w", name, classify(err))
	}
	th, err := s.parseShadow(out.Payload)
	if err != nil {
		return nil, fmt.Errorf("shadow of %s: %w", name, err)
	}
	return th, nil
}

func (s *Sink) parseShadow(payload []byte) (*thingState, error) {
	var doc struct {
		State struct {
			Reported map[string]json.RawMessage `json:"reported"`
			Desired  json.RawMessage            `json:"desired"`
		} `json:"state"`
		Metadata struct {
			Reported map[string]json.RawMessage `json:"reported"`
		} `json:"metadata"`
		Version   int64 `json:"version"`
		Timestamp int64 `json:"timestamp"`
	}
	if err := json.Unmarshal(payload, &doc); err != nil {
		return nil, err
	}
	th := &thingState{version: doc.Version}
	if d := doc.State.Desired; len(d) > 0 && string(d) != "null" {
		var buf bytes.Buffer
		if err := json.Compact(&buf, d); err == nil {
			th.desired = buf.Len()
		}
	}
	var stamps *processor.Doc
	if raw, ok := doc.State.Reported[ReservedKey]; ok {
		delete(doc.State.Reported, ReservedKey)
		var m meta
		if err := json.Unmarshal(raw, &m); err == nil && m.V == stampsVersion {
			th.typ = m.Type
			if stamps, err = decodeStamps(m.Stamps); err != nil {
				s.log.Warn("shadow stamps unreadable; treating its properties as written at its last update", "err", err)
				stamps = nil
			}
		}
	}
	// Properties the stamps do not explain count as written when AWS wrote them (their
	// metadata); the document's own timestamp is when the response was sent, the last resort.
	fallback := doc.Timestamp * 1e9
	if fallback == 0 {
		fallback = s.now().UnixNano()
	}
	d, err := rebuildMeta(stamps, doc.State.Reported, doc.Metadata.Reported, fallback)
	if err != nil {
		return nil, err
	}
	th.doc = d
	return th, nil
}
