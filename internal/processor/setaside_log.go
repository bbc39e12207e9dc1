package processor

import (
	"log/slog"
	"sync"
	"time"
)

// setAsideLog logs the records set aside by reason, summarised: the first record of a reason is
// logged at once (with how many of its batch have that reason); the later ones are counted, and
// each reason gets at most one line per interval with the count, when the interval ends. A
// device sending thousands of records that cannot be applied so makes a line a minute, not one
// a record (nor one a batch). Every record is kept with its reason where the sink keeps them
// and counted in coapgw_processor_records_total; the debug level logs each.
type setAsideLog struct {
	log   *slog.Logger
	every time.Duration

	mu      sync.Mutex
	reasons map[string]*reasonLog
}

// reasonLog is a reason logged within the last interval: when, and the records set aside for it
// since, not logged yet.
type reasonLog struct {
	since time.Time
	n     int
	first Item // the first of them
}

func newSetAsideLog(log *slog.Logger, every time.Duration) *setAsideLog {
	return &setAsideLog{log: log, every: every, reasons: map[string]*reasonLog{}}
}

// batch logs or counts the records of b set aside (by out), then logs the summaries due at now.
func (s *setAsideLog) batch(now time.Time, b *Batch, out []Outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked(now, false)
	type group struct {
		n     int
		first int
	}
	var order []string
	groups := map[string]*group{}
	for i, o := range out {
		if o.Result != SetAside {
			continue
		}
		it := &b.Items[i]
		s.log.Debug("record set aside", "gw", it.Record.GW, "seq", it.Seq, "thing", it.Record.ID, "reason", o.Reason)
		g := groups[o.Reason]
		if g == nil {
			g = &group{first: i}
			groups[o.Reason] = g
			order = append(order, o.Reason)
		}
		g.n++
	}
	for _, reason := range order {
		g := groups[reason]
		if r := s.reasons[reason]; r != nil {
			if r.n == 0 {
				r.first = b.Items[g.first]
			}
			r.n += g.n
			continue
		}
		s.reasons[reason] = &reasonLog{since: now}
		s.line(reason, g.n, &b.Items[g.first], 0)
	}
}

// flush logs the summaries due at now, or all of them.
func (s *setAsideLog) flush(now time.Time, all bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked(now, all)
}

func (s *setAsideLog) flushLocked(now time.Time, all bool) {
	for reason, r := range s.reasons {
		if !all && now.Sub(r.since) < s.every {
			continue
		}
		if r.n == 0 {
			delete(s.reasons, reason) // quiet for an interval: its next record is logged at once
			continue
		}
		s.line(reason, r.n, &r.first, now.Sub(r.since))
		r.since, r.n, r.first = now, 0, Item{}
		if all {
			delete(s.reasons, reason)
		}
	}
}

// due is how long until the next summary is due after now, and whether one is pending.
func (s *setAsideLog) due(now time.Time) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next time.Duration
	pending := false
	for _, r := range s.reasons {
		if r.n == 0 {
			continue
		}
		d := max(0, s.every-now.Sub(r.since))
		if !pending || d < next {
			next, pending = d, true
		}
	}
	return next, pending
}

func (s *setAsideLog) line(reason string, n int, first *Item, over time.Duration) {
	attrs := []any{"reason", reason, "records", n, "first_gw", first.Record.GW, "first_seq", first.Seq, "first_thing", first.Record.ID}
	if over > 0 {
		attrs = append(attrs, "over", over.Round(time.Second))
	}
	s.log.Info("records set aside", attrs...)
}
