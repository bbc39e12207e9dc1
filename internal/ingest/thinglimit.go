package ingest

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
)

// thingIndex is the things the gateway knows, so that the hot path tells a known thing from a
// new one, and a thing's type, with one map lookup and never asks the registry. It starts with
// the things Config.Registry lists and learns each new thing, with the type its first request
// names, when a record of it is let through to the spool (before the processor applies it; a
// thing whose append then fails, or whose record is set aside, still counts until a restart).
// A thing deleted from the registry (DELETE /api/things/{name}) is forgotten (ForgetThing): it
// no longer counts against --max-things, and its name may come back with another type.
//
// --max-things: a new thing beyond max is refused. The index holds one entry per thing: at most
// max, or the registry's count at start if that was larger (those things keep working, and no
// new one is let in).
//
// Names are thing ids (the registry's thing names), not /{type}/{id}: a thing exists once, with
// one type. With a Registry (local mode) a request naming a known thing under another type is
// refused (checkTypes); without one (AWS mode, --process none, tests of the cap alone) types are
// not known and not checked.
type thingIndex struct {
	max        int  // --max-things; 0: no cap
	checkTypes bool // types are known: Config.Registry
	mu         sync.RWMutex
	known      map[string]*thingEntry
	types      map[string]string // interned type names
	n          atomic.Int64      // len(known), for the gauge
}

// thingEntry is one thing the gateway knows. typ is set once (and shared by the things of that
// type); the rest is the shadow budget's (applicable.go), guarded by mu.
type thingEntry struct {
	typ string
	mu  sync.Mutex
	budget
}

func newThingIndex(max int, reg Registry) (*thingIndex, error) {
	if max <= 0 && reg == nil {
		return nil, nil
	}
	t := &thingIndex{max: max, checkTypes: reg != nil, known: make(map[string]*thingEntry), types: make(map[string]string)}
	if reg != nil {
		things, err := reg.Things()
		if err != nil {
			return nil, fmt.Errorf("ingest: list known things: %w", err)
		}
		t.known = make(map[string]*thingEntry, len(things))
		for _, th := range things {
			t.known[th.Name] = &thingEntry{typ: t.intern(th.Type), budget: unknownBudget}
		}
	}
	t.n.Store(int64(len(t.known)))
	return t, nil
}

// intern returns the type name's shared copy; t.mu is held for writing (or t is not shared yet).
func (t *thingIndex) intern(name string) string {
	if s, ok := t.types[name]; ok {
		return s
	}
	t.types[name] = name
	return name
}

// get returns the entry of thing id, nil if the gateway does not know it.
func (t *thingIndex) get(id []byte) *thingEntry {
	t.mu.RLock()
	e := t.known[string(id)]
	t.mu.RUnlock()
	return e
}

// admit returns the entry of thing id, adding it with type typ and the budget of a new thing
// (s.initial) if there is room; nil if the thing is new and the cap is reached. A known thing
// costs a map lookup and no allocation.
func (t *thingIndex) admit(typ, id []byte, s *shadowBudget) *thingEntry {
	if e := t.get(id); e != nil {
		return e
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.known[string(id)]; e != nil {
		return e
	}
	if t.max > 0 && len(t.known) >= t.max {
		return nil
	}
	e := &thingEntry{typ: t.intern(string(typ)), budget: s.initial()}
	t.known[string(id)] = e
	t.n.Store(int64(len(t.known)))
	return e
}

// forget drops thing name, unless a record of it let through is not processed yet (s: the
// shadow budget, nil without a Registry): that record will create the thing again. It reports
// whether the name is forgotten (or was not known).
func (t *thingIndex) forget(name string, s *shadowBudget) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.known[name]
	if e == nil {
		return true
	}
	if s != nil {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.pending > 0 || e.last > s.processed.Load() {
			return false
		}
		if e.model != nil {
			e.model = nil
			s.models.Add(-1)
		}
	}
	delete(t.known, name)
	t.n.Store(int64(len(t.known)))
	return true
}

// ForgetThing tells the device API that thing name is being deleted from the registry (the
// HTTP API's DELETE /api/things/{name} calls it first; the gateway wires it): it stops counting
// against --max-things, and a record of the name is taken for a new thing, of whatever type it
// names. It reports false, and forgets nothing, while a record of the thing let through is not
// processed yet: applied after the delete, that record creates the thing again, which so keeps
// counting with its type. A record let through after ForgetThing and applied before the delete
// is deleted with the thing and the name counts (more, never less than the registry holds).
// True for a name the gateway does not know, and without --max-things and a Registry.
func (h *Handler) ForgetThing(name string) bool {
	if h.things == nil {
		return true
	}
	return h.things.forget(name, h.shadows)
}

// ThingChanged tells the device API that the registry changed thing name, of type typ, without
// a record of the device API (a set-aside record retried through the HTTP API; the gateway
// wires it): a thing it did not know is learnt with its type, and counts against --max-things
// (as the things known at start, even beyond the cap); the shadow budget of a known thing
// becomes unknown, so that its state is read from the registry when it is next needed.
func (h *Handler) ThingChanged(name, typ string) {
	t := h.things
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.known[name]
	if e == nil {
		t.known[name] = &thingEntry{typ: t.intern(typ), budget: unknownBudget}
		t.n.Store(int64(len(t.known)))
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.model != nil && h.shadows != nil {
		h.shadows.models.Add(-1)
	}
	e.model, e.size = nil, -1
	if e.typ != typ && e.pending == 0 {
		// It exists with another type now (deleted, and created again by the retry). While a
		// record of it is being appended, the entry stays as it is: that record's outcome
		// decides, and the type is learnt at the next retry or restart.
		t.known[name] = &thingEntry{typ: t.intern(typ), budget: budget{size: -1, last: e.last}}
	}
}

// otherType returns the type e has if it is not typ, "" if it is typ (or types are not checked).
func (t *thingIndex) otherType(e *thingEntry, typ []byte) string {
	if !t.checkTypes || e.typ == string(typ) {
		return ""
	}
	return e.typ
}

// thingCheck is the last step before the spool (pipeline.go), for things the gateway knows
// about (Config.MaxThings, Config.Registry); without either it is no step at all:
//
//   - --max-things: a record of a thing the gateway does not know, when it already knows
//     --max-things things, gets 5.03 with Max-Age (--retry-after) and "thing limit reached". The
//     gateway is full, not the request wrong, so it is a 5.03 like a full spool, not a 4.xx.
//   - type: a record naming a known thing under another type than the one it exists with gets
//     4.00 "thing X exists with type Y" (the registry would set it aside). 4.00: the request
//     names the wrong resource, like an invalid name; 4.03 is coapgw's answer to an identity
//     writing another's thing, and 4.09 Conflict is RFC 8132's (FETCH/PATCH), not RFC 7252's —
//     a client that does not know it takes it for 4.00 anyway (RFC 7252 §5.9.2).
//   - shadow budget (applicable.go): a record that would take the thing's reported state past
//     8 KB or --max-properties gets 4.13.
func (h *Handler) thingCheck(next coapserver.Handler) coapserver.Handler {
	if h.things == nil {
		return next
	}
	return coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		e := h.things.admit(r.Path(0), r.Path(1), h.shadows)
		if e == nil {
			h.results[resThingLimit].Inc()
			h.unavailable(w, "thing limit reached")
			return
		}
		if other := h.things.otherType(e, r.Path(0)); other != "" {
			h.results[resTypeConflict].Inc()
			w.Respond(coapmsg.BadRequest, h.diagnostic(w, fmt.Appendf(nil, "thing %.48s exists with type %.48s", r.Path(1), other)))
			return
		}
		if h.shadows != nil && !h.admitShadow(w, r, e) {
			return
		}
		next.ServeCoAP(w, r)
	})
}
