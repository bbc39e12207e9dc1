package ingest

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
)

// Registry is what the device API reads from the local registry (local mode), so that a record
// the registry would set aside is refused before it is stored.
type Registry interface {
	// Things lists every thing with its type, at start.
	Things() ([]KnownThing, error)
	// State returns a thing's reported state as the registry holds it, as a document the caller
	// may keep and change; an empty one for an unknown thing.
	State(ctx context.Context, thing string) (*processor.Doc, error)
	// Processed is the highest spool sequence number the registry has processed, at start.
	Processed() (uint64, error)
}

// KnownThing is a thing that exists, with its type.
type KnownThing struct{ Name, Type string }

// The shadow budget. A record is applied by merging its properties into its thing's reported
// state (processor.Doc.Merge); the registry sets it aside when the result would pass
// processor.MaxShadowBytes (8 KB, AWS IoT's limit) or --max-properties. The device API answers
// such a record 4.13 before it is stored, without reading the registry for each request:
//
// Every known thing carries two upper bounds — of the size of its reported state and of its
// properties once every record let through is applied. A record's size and properties are at
// most its payload's length and its count of ':' (merging a payload into a state adds at most
// what the payload renders to, and a property needs a ':'; FuzzBudgetBound), so a record that
// fits under both bounds is let through at the cost of two additions and the bounds grow by it.
// A record that does not fit is decided exactly: when every record of the thing let through so
// far has been applied (its newest spool sequence is at or below the processor's, and none is
// still being appended), the registry's state is read, the record merged into it, and the
// result measured — 4.13 if it is too big, else the bounds become the exact figures. When
// records of the thing are still on their way, the exact state is not known: the request gets
// 5.03 with Max-Age 1 and "thing busy, send again", nothing stored (the processor takes
// milliseconds).
//
// A thing whose state is past half a limit after an exact decision keeps that state in memory
// (its model: at most maxModels things, each at most 8 KB of state) and every later record of it
// is merged into the model and decided exactly there, with no registry read and no waiting for
// the processor. The model stays exact because every record let through is applied in the end
// (they are merged in any order to the same result); a failed append drops it.
//
// So the guarantee: no record the device API let through takes its thing past either limit when
// the records are applied — two quick posts cannot add up past it, since the second is judged
// with the first counted. What it does not cover: records of a thing still in the spool from
// before a restart count as soon as the processor has caught up with them (until then every
// record of a thing first seen since the start is decided exactly, which waits for them).
type budget struct {
	size, props int            // upper bounds (exact with a model); size -1: unknown, decide exactly
	pending     int            // records let through whose spool append has not answered
	last        uint64         // spool sequence of the newest record stored
	model       *processor.Doc // the state once every record let through is applied, or nil
	seeded      bool           // with SeedShadow: the bounds count the seed keys
}

// maxModels is how many things may keep their state in memory (budget.model): about 10–40 KB
// each at 8 KB of state, so at most 10–40 MB.
const maxModels = 1024

// unknownBudget is the budget of a thing whose state has not been read.
var unknownBudget = budget{size: -1}

// shadowBudget is the budget's configuration and the processor's progress.
type shadowBudget struct {
	reg       Registry
	spool     Spool
	maxSize   int
	maxProps  int    // 0: no cap
	startSeq  uint64 // the spool's next sequence number at start
	processed atomic.Uint64
	startDone atomic.Bool  // every record stored before the start has been processed
	models    atomic.Int64 // things with a model
}

func newShadowBudget(reg Registry, maxProps int, sp Spool) (*shadowBudget, error) {
	if reg == nil {
		return nil, nil
	}
	done, err := reg.Processed()
	if err != nil {
		return nil, fmt.Errorf("ingest: registry's processed sequence: %w", err)
	}
	st := sp.Stats()
	b := &shadowBudget{reg: reg, spool: sp, maxSize: processor.MaxShadowBytes, maxProps: maxProps, startSeq: st.NextSeq}
	b.processed.Store(done)
	b.startDone.Store(st.Depth == 0)
	return b, nil
}

// startPending reports whether records stored before the start may not have been processed:
// until the processor has passed the spool's sequence number at start, or the spool has been
// found empty (sequence numbers may skip, so the first alone might wait for a new record).
func (s *shadowBudget) startPending() bool {
	if s.startDone.Load() {
		return false
	}
	if s.processed.Load()+1 >= s.startSeq || s.spool.Stats().Depth == 0 {
		s.startDone.Store(true)
		return false
	}
	return true
}

// initial is the budget of a thing first seen now: empty, unless records stored before the
// start may not have been applied yet (one of them may be this thing's). s may be nil.
func (s *shadowBudget) initial() budget {
	if s != nil && s.startPending() {
		return unknownBudget
	}
	return budget{}
}

// Processed tells the device API that the processor has applied (or set aside) every record up
// to spool sequence seq (local mode: the gateway calls it after each batch).
func (h *Handler) Processed(seq uint64) {
	if h.shadows == nil {
		return
	}
	for {
		cur := h.shadows.processed.Load()
		if seq <= cur || h.shadows.processed.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// decoders are the processor's: what the device API predicts is what the registry will do.
var decoders = processor.DefaultDecoders()

// admitShadow lets r's record through and counts it in e's budget, or answers r and returns
// false: 4.13 if the record would take the thing's state past a limit, 5.03 if that cannot be
// known yet (or the registry cannot be read).
func (h *Handler) admitShadow(w *coapserver.ResponseWriter, r *coapserver.Request, e *thingEntry) bool {
	s := h.shadows
	// The bounds below are of the payload's JSON form, what the registry merges.
	payload, err := record.ToJSON(nil, contentFormat(r), r.Payload(), h.cfg.MaxDepth, r.Received.UnixNano())
	if err != nil { // validate accepted it: cannot happen
		h.reject(w, coapmsg.BadRequest, "payload cannot be decoded")
		return false
	}
	// A key is rendered with \u0008 and \u000c where the payload may say \b and \f: 4 bytes
	// more per backslash covers it.
	size, props := len(payload)+4*bytes.Count(payload, backslash), bytes.Count(payload, colon)
	e.mu.Lock()
	defer e.mu.Unlock()
	if h.cfg.SeedShadow && !e.seeded {
		// --seed-shadow: the processor adds online, uuid and type to the thing's state; counted
		// once in the bounds (their values do not change), exactly in a decision below.
		size += processor.SeedKeysBound(string(r.Path(1)), e.typ)
		props += 3
	}
	if e.model == nil && e.size >= 0 && s.fits(e.size+size, e.props+props) {
		e.size, e.props = e.size+size, e.props+props
		e.seeded = true
		e.pending++
		return true
	}
	state := e.model
	if state == nil {
		if e.pending > 0 || e.last > s.processed.Load() || e.size < 0 && s.startPending() {
			h.results[resThingBusy].Inc()
			w.SetUintOption(coapmsg.MaxAge, 1)
			w.Respond(coapmsg.ServiceUnavailable, h.diagnostic(w, []byte("thing busy, send again")))
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		state, err = s.reg.State(ctx, string(r.Path(1)))
		cancel()
		if err != nil {
			h.results[resError].Inc()
			h.log.Warn("read a thing's state from the registry", "thing", string(r.Path(1)), "err", err)
			h.unavailable(w, "storage unavailable")
			return false
		}
		e.size, e.props = state.Size(), state.Properties() // exact: nothing is pending
	}
	// The document keeps references to the payload, which the request's buffer is not.
	// (A CBOR or SenML payload is decoded as the processor will, with the readings' own times.)
	rec, err := decoders[contentFormat(r)].Decode(bytes.Clone(r.Payload()), r.Received.UnixNano())
	if err != nil { // validate accepted it: cannot happen
		h.reject(w, coapmsg.BadRequest, "payload cannot be decoded")
		return false
	}
	next := state
	if !s.fits(e.size+size, e.props+props) {
		next = state.Clone() // it may not fit: keep state as it is
	}
	next.Merge(rec)
	if h.cfg.SeedShadow {
		processor.AddSeedKeys(next, string(r.Path(1)), e.typ, r.Received.UnixNano())
	}
	nsize, nprops := next.Size(), next.Properties()
	switch {
	case nsize > s.maxSize:
		h.results[resShadowLimit].Inc()
		w.SetUintOption(coapmsg.Size1, uint32(max(s.maxSize-e.size, 0)))
		w.Respond(coapmsg.RequestEntityTooLarge, h.diagnostic(w, fmt.Appendf(nil, "shadow would be %d bytes, over %d", nsize, s.maxSize)))
		s.keep(e, state)
		return false
	case s.maxProps > 0 && nprops > s.maxProps:
		h.results[resPropertyLimit].Inc()
		w.Respond(coapmsg.RequestEntityTooLarge, h.diagnostic(w, fmt.Appendf(nil, "thing would have %d properties, over %d", nprops, s.maxProps)))
		s.keep(e, state)
		return false
	}
	e.size, e.props = nsize, nprops
	e.seeded = h.cfg.SeedShadow // the exact figures count the seed keys
	e.pending++
	s.keep(e, next)
	return true
}

// fits reports whether a state of size bytes and props properties is within the limits.
func (s *shadowBudget) fits(size, props int) bool {
	return size <= s.maxSize && (s.maxProps == 0 || props <= s.maxProps)
}

// keep makes state, exact as of now (e.size and e.props measure it), e's model if it is past
// half a limit and there is room, and drops e's model if it is not; e.mu is held.
func (s *shadowBudget) keep(e *thingEntry, state *processor.Doc) {
	tight := e.size > s.maxSize/2 || s.maxProps > 0 && e.props > s.maxProps/2
	switch {
	case tight && e.model != nil:
		e.model = state
	case tight:
		if s.models.Add(1) <= maxModels {
			e.model = state
		} else {
			s.models.Add(-1)
		}
	case e.model != nil:
		e.model = nil
		s.models.Add(-1)
	}
}

// settle records the end of a spool append of one of e's records: stored as seq, or failed.
// A failed append makes a model wrong (it has the record): the model goes, and the state is
// read again when it is needed.
func (e *thingEntry) settle(s *shadowBudget, seq uint64, err error) {
	e.mu.Lock()
	e.pending--
	if err == nil {
		e.last = max(e.last, seq)
	} else if e.model != nil {
		e.model, e.size = nil, -1
		s.models.Add(-1)
	}
	e.mu.Unlock()
}

var colon, backslash = []byte{':'}, []byte{'\\'}
