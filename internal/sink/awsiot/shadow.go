package awsiot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

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
		_, err := s.publishLive(ctx, b, live, out, pub)
		return err == nil, err
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
			_, err := s.publishLive(ctx, b, live, out, pub)
			return err == nil, err
		}
	}
	if rejected, err := s.publishLive(ctx, b, live, out, pub); err != nil || rejected {
		return err == nil, err
	}
	version, known := th.version, true
	if body, ok := s.updateBody(th, next); ok {
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
			known = false
		} else {
			version = doc.Version
		}
	}
	if known {
		if reg, ok := s.writeStamps(ctx, u.Thing, th, next, version); ok {
			s.things.Add(u.Thing, &thingState{typ: th.typ, version: version, doc: compact(next), desired: th.desired, reg: reg})
		} else {
			s.things.Remove(u.Thing)
		}
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

// meta is coapgw's bookkeeping of a thing in versioned mode: in its registry shadow
// (RegistryShadow) with SV, the classic shadow version the stamps describe; in the classic
// shadow's reserved key in earlier versions (legacy, no SV).
type meta struct {
	V      int    `json:"v"`
	Type   string `json:"type"`
	Stamps string `json:"t"`
	SV     int64  `json:"sv"`
}

// metaJSON is coapgw's bookkeeping for a thing of type typ whose state is d: {"v":1,"type":…,
// "t":stamps}.
func metaJSON(typ string, d *processor.Doc) []byte {
	b := fmt.Appendf(nil, `{"v":%d,"type":`, stampsVersion)
	b = jsonscan.AppendQuoted(b, typ)
	b = append(b, `,"t":"`...)
	b = append(b, encodeStamps(d)...)
	return append(b, `"}`...)
}

// stampsBody is the registry shadow update recording that th's classic shadow is at version sv
// with state d: {"state":{"reported":{"v":1,"type":…,"t":stamps,"sv":sv}},"version":th.reg}.
func stampsBody(th *thingState, d *processor.Doc, sv int64) []byte {
	m := metaJSON(th.typ, d)
	b := make([]byte, 0, len(m)+80)
	b = append(b, `{"state":{"reported":`...)
	b = append(b, m[:len(m)-1]...)
	b = fmt.Appendf(b, `,"sv":%d}}`, sv)
	if th.reg > 0 {
		b = fmt.Appendf(b, `,"version":%d`, th.reg)
	}
	return append(b, '}')
}

// updateBody is the UpdateThingShadow document of the classic shadow turning th's state into
// next: the merge patch (and the removal of an earlier version's reserved key), conditional on
// th's version when the shadow exists. ok is false when there is nothing to send: the values are
// the same, only their times changed.
func (s *Sink) updateBody(th *thingState, next *processor.Doc) (body []byte, ok bool) {
	b := make([]byte, 0, 64+next.Size())
	b = append(b, `{"state":{"reported":{`...)
	b, wrote := appendPatch(b, th.doc, next, true)
	if th.legacy {
		if wrote {
			b = append(b, ',')
		}
		b = jsonscan.AppendQuoted(b, ReservedKey)
		b = append(b, ":null"...)
		wrote = true
	}
	if !wrote {
		return nil, false
	}
	b = append(b, "}}"...)
	if th.version > 0 {
		b = append(b, `,"version":`...)
		b = fmt.Appendf(b, "%d", th.version)
	}
	return append(b, '}'), true
}

// writeStamps records next's per-leaf times for the classic shadow version sv in the thing's
// registry shadow, conditional on the registry shadow's version th.reg, and returns its new
// version. A conflict re-reads it: stamps of a later classic version there are newer than these
// and stay. ok is false if the stamps could not be written; the records are in the classic
// shadow all the same, and a reader then finds stamps older than the classic shadow and takes
// the later of the stamp and AWS's metadata time per property (parseShadows).
func (s *Sink) writeStamps(ctx context.Context, thing string, th *thingState, next *processor.Doc, sv int64) (reg int64, ok bool) {
	cur := *th
	for range 3 {
		resp, err := s.data.UpdateThingShadow(ctx, &UpdateThingShadowInput{ThingName: thing, ShadowName: RegistryShadow, Payload: stampsBody(&cur, next, sv)})
		s.m.call("UpdateThingShadow", err)
		if err == nil {
			var doc struct{ Version int64 }
			if json.Unmarshal(resp.Payload, &doc) != nil || doc.Version == 0 {
				return 0, false
			}
			return doc.Version, true
		}
		if !hasCode(err, "ConflictException") {
			s.log.Warn("record per-property times in the registry shadow", "thing", thing, "shadow", RegistryShadow, "err", err)
			return 0, false
		}
		s.m.conflicts.Inc()
		got, err := s.getRegistry(ctx, thing)
		if err != nil {
			return 0, false
		}
		if got.meta.SV >= sv {
			return 0, false // a later writer's stamps: the cache is stale too
		}
		cur.reg = got.version
	}
	return 0, false
}

// limits checks a thing's state d against the shadow limits: AWS counts the whole state
// document toward its size limit, the desired state (as last read) too; and coapgw's stamps
// must fit in the registry shadow.
func (s *Sink) limits(d *processor.Doc, th *thingState) string {
	if reason := d.CheckLimits(); reason != "" {
		return reason
	}
	size := d.Size() + th.desired
	if size > processor.MaxShadowBytes {
		return fmt.Sprintf("shadow would be %d bytes with the desired state (%d bytes), over the %d-byte limit", size, th.desired, processor.MaxShadowBytes)
	}
	if n := len(stampsBody(th, d, 1<<40)); n > processor.MaxShadowBytes {
		return fmt.Sprintf("coapgw's per-property times for this state would be %d bytes, over the %d-byte limit of the registry shadow %q (too many properties)", n, processor.MaxShadowBytes, RegistryShadow)
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

// loadShadow reads a thing's classic shadow and its registry shadow into a thingState (type and
// per-leaf times from the registry shadow, else from an earlier version's reserved key).
func (s *Sink) loadShadow(ctx context.Context, name string) (*thingState, error) {
	for attempt := 0; ; attempt++ {
		reg, err := s.getRegistry(ctx, name)
		if err != nil {
			return nil, err
		}
		out, err := s.data.GetThingShadow(ctx, &GetThingShadowInput{ThingName: name})
		if err != nil && hasCode(err, "ResourceNotFoundException") {
			s.m.call("GetThingShadow", nil)
			// No classic shadow (yet): the stamps may still hold deletions.
			return s.parseShadows([]byte(`{}`), reg)
		}
		s.m.call("GetThingShadow", err)
		if err != nil {
			return nil, fmt.Errorf("get shadow of %s: %w", name, classify(err))
		}
		th, err := s.parseShadows(out.Payload, reg)
		if err != nil {
			return nil, fmt.Errorf("shadow of %s: %w", name, err)
		}
		// Stamps of another version than the shadow: most likely a writer between its two
		// updates (a few milliseconds). Read both again rather than fall back to the metadata
		// times, which would take a newer record received before that write for an older one.
		if !reg.stamps || reg.meta.SV == th.version || attempt >= 2 {
			return th, nil
		}
		if err := sleep(ctx, time.Duration(attempt+1)*30*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// registry is what a registry shadow holds; version 0 if there is none.
type registry struct {
	meta    meta
	stamps  bool // meta has readable stamps
	version int64
}

// getRegistry reads a thing's registry shadow.
func (s *Sink) getRegistry(ctx context.Context, name string) (registry, error) {
	out, err := s.data.GetThingShadow(ctx, &GetThingShadowInput{ThingName: name, ShadowName: RegistryShadow})
	if err != nil && hasCode(err, "ResourceNotFoundException") {
		s.m.call("GetThingShadow", nil)
		return registry{}, nil
	}
	s.m.call("GetThingShadow", err)
	if err != nil {
		return registry{}, fmt.Errorf("get shadow %s of %s: %w", RegistryShadow, name, classify(err))
	}
	var doc struct {
		State struct {
			Reported meta `json:"reported"`
		} `json:"state"`
		Version int64 `json:"version"`
	}
	if err := json.Unmarshal(out.Payload, &doc); err != nil {
		s.log.Warn("registry shadow unreadable; ignored", "thing", name, "shadow", RegistryShadow, "err", err)
		return registry{}, nil
	}
	m := doc.State.Reported
	return registry{meta: m, stamps: m.V == stampsVersion && m.Stamps != "", version: doc.Version}, nil
}

// parseShadow reads a classic shadow on its own (an earlier version's, with coapgw's reserved
// key, or anyone's).
func (s *Sink) parseShadow(payload []byte) (*thingState, error) {
	return s.parseShadows(payload, registry{})
}

// parseShadows reads a classic shadow and its registry shadow reg. The stamps describe the
// classic shadow exactly when they were written for its version (reg.meta.SV); otherwise (a
// writer stopped between the two updates, or someone else wrote the classic shadow since) each
// property counts as written at the later of its stamp and its metadata time: an older record
// never overwrites it, and a newer one does once AWS's clock has passed.
func (s *Sink) parseShadows(payload []byte, reg registry) (*thingState, error) {
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
	th := &thingState{version: doc.Version, reg: reg.version, typ: reg.meta.Type}
	if d := doc.State.Desired; len(d) > 0 && string(d) != "null" {
		var buf bytes.Buffer
		if err := json.Compact(&buf, d); err == nil {
			th.desired = buf.Len()
		}
	}
	var (
		stamps *processor.Doc
		coded  string
		stale  bool
	)
	if reg.stamps {
		coded, stale = reg.meta.Stamps, reg.meta.SV != doc.Version
	}
	if raw, ok := doc.State.Reported[ReservedKey]; ok {
		// An earlier version kept its bookkeeping in the reported state; the next update
		// removes it.
		delete(doc.State.Reported, ReservedKey)
		delete(doc.Metadata.Reported, ReservedKey)
		th.legacy = true
		var m meta
		if err := json.Unmarshal(raw, &m); err == nil && m.V == stampsVersion {
			if th.typ == "" {
				th.typ = m.Type
			}
			if coded == "" {
				coded = m.Stamps
			}
		}
	}
	if coded != "" {
		var err error
		if stamps, err = decodeStamps(coded); err != nil {
			s.log.Warn("shadow stamps unreadable; treating its properties as written at their metadata time", "err", err)
			stamps = nil
		}
	}
	// Properties the stamps do not explain count as written when AWS wrote them (their
	// metadata); the document's own timestamp is when the response was sent, the last resort.
	fallback := doc.Timestamp * 1e9
	if fallback == 0 {
		fallback = s.now().UnixNano()
	}
	d, err := rebuildMeta(stamps, doc.State.Reported, doc.Metadata.Reported, fallback, stale)
	if err != nil {
		return nil, err
	}
	th.doc = d
	return th, nil
}
