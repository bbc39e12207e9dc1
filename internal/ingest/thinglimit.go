package ingest

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/coapgw/coapgw/internal/coapserver"
)

// thingLimit is --max-things: the set of thing names the gateway knows, so that the hot path
// tells a known thing from a new one with one map lookup and never asks the registry. It starts
// with the names Config.Things lists and learns each new name when a record of it is let through
// to the spool (before the processor applies it; a name whose append then fails, or whose record
// is set aside, still counts until a restart). A new name beyond max is refused. The set holds
// one entry per thing: at most max, or the registry's count at start if that was larger (those
// things keep working, and no new one is let in).
//
// Names are thing ids (the registry's thing names), not /{type}/{id}: a thing exists once,
// whatever type a request claims for it.
type thingLimit struct {
	max   int
	mu    sync.RWMutex
	known map[string]struct{}
	n     atomic.Int64 // len(known), for the gauge
}

func newThingLimit(max int, things func() ([]string, error)) (*thingLimit, error) {
	if max <= 0 {
		return nil, nil
	}
	t := &thingLimit{max: max, known: make(map[string]struct{})}
	if things != nil {
		names, err := things()
		if err != nil {
			return nil, fmt.Errorf("ingest: list known things: %w", err)
		}
		t.known = make(map[string]struct{}, len(names))
		for _, n := range names {
			t.known[n] = struct{}{}
		}
	}
	t.n.Store(int64(len(t.known)))
	return t, nil
}

// admit reports whether a record of thing id may be stored: the thing is known, or there is room
// for it (then it is known from now on). A known thing costs a map lookup and no allocation.
func (t *thingLimit) admit(id []byte) bool {
	t.mu.RLock()
	_, ok := t.known[string(id)]
	t.mu.RUnlock()
	if ok {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.known[string(id)]; ok {
		return true
	}
	if len(t.known) >= t.max {
		return false
	}
	t.known[string(id)] = struct{}{}
	t.n.Store(int64(len(t.known)))
	return true
}

// thingCap is --max-things (pipeline.go): a record of a thing the gateway does not know, when it
// already knows --max-things things, gets 5.03 with Max-Age (--retry-after) and "thing limit
// reached" before anything is stored. The gateway is full, not the request wrong, so it is a
// 5.03 like a full spool, not a 4.xx. Without a cap it is no step at all.
func (h *Handler) thingCap(next coapserver.Handler) coapserver.Handler {
	if h.things == nil {
		return next
	}
	return coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		if !h.things.admit(r.Path(1)) {
			h.results[resThingLimit].Inc()
			h.unavailable(w, "thing limit reached")
			return
		}
		next.ServeCoAP(w, r)
	})
}
