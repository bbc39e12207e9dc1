package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"
)

var (
	errHubClosed  = errors.New("event stream closed")
	errTooMany    = errors.New("too many event-stream clients")
	keepAliveLine = []byte(": keep-alive\n\n")
)

// hub coalesces Notify calls and hands the changed names to the event-stream clients without
// ever blocking on one: each client has a bounded backlog, and a client whose backlog overflows
// is marked for a resync instead.
type hub struct {
	coalesce   time.Duration
	capacity   int // names per client backlog, and per pending batch
	maxClients int
	done       chan struct{} // closed by close

	mu        sync.Mutex
	closed    bool
	pending   map[string]struct{} // names since the last flush
	overflow  bool                // pending went past capacity: everyone resyncs
	timer     *time.Timer         // armed while pending is not empty
	lastFlush time.Time
	clients   map[*client]struct{}
}

// client is one event stream's backlog. The batches are shared between clients and never
// modified after the flush that made them.
type client struct {
	wake chan struct{} // capacity 1: "there is something to write"

	mu      sync.Mutex
	batches []map[string]struct{}
	n       int // names in batches, counting a name once per batch
	resync  bool
}

func newHub(coalesce time.Duration, capacity, maxClients int) *hub {
	return &hub{
		coalesce:   coalesce,
		capacity:   capacity,
		maxClients: maxClients,
		done:       make(chan struct{}),
		pending:    map[string]struct{}{},
		clients:    map[*client]struct{}{},
	}
}

func (h *hub) notify(names []string) {
	if len(names) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || len(h.clients) == 0 {
		// Nobody listens; a client that connects later loads the current state anyway.
		return
	}
	if !h.overflow {
		for _, n := range names {
			h.pending[n] = struct{}{}
		}
		if len(h.pending) > h.capacity {
			h.overflow = true
			clear(h.pending)
		}
	}
	if h.timer == nil {
		delay := max(0, h.coalesce-time.Since(h.lastFlush))
		h.timer = time.AfterFunc(delay, h.flush)
	}
}

// flush hands the pending names to every client; it runs on the timer's goroutine.
func (h *hub) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.timer = nil
	h.lastFlush = time.Now()
	if h.closed {
		return
	}
	batch, overflow := h.pending, h.overflow
	h.pending, h.overflow = map[string]struct{}{}, false
	if len(batch) == 0 && !overflow {
		return
	}
	for c := range h.clients {
		c.deliver(batch, overflow, h.capacity)
	}
}

func (c *client) deliver(batch map[string]struct{}, overflow bool, capacity int) {
	c.mu.Lock()
	switch {
	case c.resync:
	case overflow || c.n+len(batch) > capacity:
		c.resync, c.batches, c.n = true, nil, 0
	default:
		c.batches = append(c.batches, batch)
		c.n += len(batch)
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// take empties the backlog: the changed names, sorted, or resync.
func (c *client) take() (names []string, resync bool) {
	c.mu.Lock()
	batches, resync := c.batches, c.resync
	c.batches, c.n, c.resync = nil, 0, false
	c.mu.Unlock()
	if resync {
		return nil, true
	}
	if len(batches) == 1 {
		names = make([]string, 0, len(batches[0]))
		for n := range batches[0] {
			names = append(names, n)
		}
	} else {
		seen := map[string]struct{}{}
		for _, b := range batches {
			for n := range b {
				if _, dup := seen[n]; !dup {
					seen[n] = struct{}{}
					names = append(names, n)
				}
			}
		}
	}
	slices.Sort(names)
	return names, false
}

func (h *hub) subscribe() (*client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errHubClosed
	}
	if len(h.clients) >= h.maxClients {
		return nil, errTooMany
	}
	c := &client{wake: make(chan struct{}, 1)}
	h.clients[c] = struct{}{}
	return c, nil
}

func (h *hub) unsubscribe(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
	close(h.done)
}

// clientCount is the number of open event streams.
func (h *hub) clientCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

type thingEvent struct {
	Names []string `json:"names"`
}

func (a *API) handleEvents(w http.ResponseWriter, r *http.Request) {
	if !noParams(w, r) {
		return
	}
	c, err := a.hub.subscribe()
	if err != nil {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	defer a.hub.unsubscribe(c)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // a reverse proxy must not buffer the stream
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	var buf bytes.Buffer
	buf.WriteString("retry: 2000\n: connected\n\n")
	keepAlive := time.NewTicker(a.cfg.KeepAlive)
	defer keepAlive.Stop()
	for {
		if buf.Len() > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(a.cfg.WriteTimeout))
			if _, err := w.Write(buf.Bytes()); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			buf.Reset()
		}
		select {
		case <-r.Context().Done():
			return
		case <-a.hub.done:
			return
		case <-keepAlive.C:
			buf.Write(keepAliveLine)
		case <-c.wake:
			names, resync := c.take()
			switch {
			case resync:
				buf.WriteString("event: resync\ndata: {}\n\n")
			case len(names) > 0:
				data, _ := json.Marshal(thingEvent{Names: names})
				buf.WriteString("event: thing\ndata: ")
				buf.Write(data)
				buf.WriteString("\n\n")
			}
		}
	}
}
