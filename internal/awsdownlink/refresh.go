package awsdownlink

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Without the documents topic (Config.Documents false, the default), the gateway does not hear
// when a report clears a delta: AWS publishes no delta message then. It asks instead: while a
// thing has a pending delta, a request from its device schedules one GetThingShadow
// refreshDelay later (time for the worker to apply the report), at most one per refreshDelay
// per thing, within the rate limit. Until the refresh the device may get a delta it has just
// applied once more; applying it again changes nothing.
//
// The trade: documents messages are exact and immediate, but AWS delivers one to every gateway
// for every shadow update of the account (every applied report), and bills each; refreshes cost
// one GetThingShadow per refreshDelay per thing with a pending delta whose device is talking.

// refreshDelay is how long after a device's request its thing's shadow is read again.
const refreshDelay = 10 * time.Second

// maxRefreshes bounds the refreshes waiting at once.
const maxRefreshes = 100_000

// refresher holds the refreshes to make.
type refresher struct {
	mu  sync.Mutex
	due map[string]time.Time
}

// scheduleRefresh schedules a refresh of name's entry e, unless one is scheduled already
// (e.nextRefresh). It allocates only when it schedules.
func (d *Downlink) scheduleRefresh(name []byte, e *atomic.Int64, now time.Time) {
	n := e.Load()
	if now.UnixNano() < n || !e.CompareAndSwap(n, now.Add(refreshDelay).UnixNano()) {
		return
	}
	d.ref.mu.Lock()
	// One already waiting (its time passed, the tick has not come) keeps its time: pushing it
	// back would let a device that talks often postpone its refresh for ever.
	if _, waiting := d.ref.due[string(name)]; !waiting && len(d.ref.due) < maxRefreshes {
		d.ref.due[string(name)] = now.Add(refreshDelay)
	}
	d.ref.mu.Unlock()
}

// refreshLoop makes the refreshes when they are due, until ctx ends.
func (d *Downlink) refreshLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, name := range d.dueRefreshes(now) {
				d.refresh(ctx, name, now)
			}
		}
	}
}

func (d *Downlink) dueRefreshes(now time.Time) []string {
	d.ref.mu.Lock()
	defer d.ref.mu.Unlock()
	var out []string
	for name, at := range d.ref.due {
		if !at.After(now) {
			out = append(out, name)
			delete(d.ref.due, name)
		}
	}
	return out
}

func (d *Downlink) refresh(ctx context.Context, name string, now time.Time) {
	if !d.cache.allowAt(now) {
		d.met.refreshes.WithLabelValues("rate_limited").Inc()
		return
	}
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	doc, found, err := d.get.GetThingShadow(ctx, name)
	var version int64
	var delta map[string]any
	if err == nil && found {
		version, delta, err = parseShadow(doc)
	}
	if err != nil || !found {
		d.met.refreshes.WithLabelValues("error").Inc()
		return
	}
	d.met.refreshes.WithLabelValues("ok").Inc()
	if _, changed := d.cache.apply(name, version, delta, true); changed {
		d.notify(name)
	}
}
