package spool

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// Memory is a Log kept in memory: the same semantics as Disk (sequence numbers, group commit from its
// own goroutine, asynchronous callbacks, cap, cursor) without durability. Size is accounted in frame
// bytes, as on disk.
type Memory struct {
	maxBytes    int64
	m           *metrics
	incarnation string

	mu      sync.Mutex
	chunk   []byte // where queued data is copied; never grown, so queued entries may alias it
	refs    []memRef
	queued  int64
	nextSeq uint64
	closed  bool

	bytes atomic.Int64 // frame bytes of the entries held

	wake chan struct{}
	quit chan struct{}
	done chan struct{}

	stateMu     sync.Mutex
	entries     []Entry // committed entries removed from the front
	rd          int     // index in entries of the next one Next returns
	cursor      uint64
	lastDurable uint64
	notify      chan struct{}

	closeOnce sync.Once
}

// memChunkSize is the size of the blocks Memory copies entries into.
const memChunkSize = 64 << 10

type memRef struct {
	seq  uint64
	data []byte
	fn   func(uint64, error)
}

// NewMemory returns a running Memory log. It panics if the metrics cannot be registered, like
// prometheus.MustRegister.
func NewMemory(opts Options) *Memory {
	opts = opts.withDefaults()
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		panic(fmt.Sprintf("spool: %v", err))
	}
	mem := &Memory{
		maxBytes:    opts.MaxBytes,
		m:           m,
		nextSeq:     1,
		incarnation: newIncarnation(),
		wake:        make(chan struct{}, 1),
		quit:        make(chan struct{}),
		done:        make(chan struct{}),
		notify:      make(chan struct{}),
	}
	go mem.run()
	return mem
}

// Append queues a copy of data. See Log.
func (l *Memory) Append(data []byte, done func(seq uint64, err error)) error {
	if len(data) > maxFrameData {
		return ErrTooLarge
	}
	n := int64(frameHeaderSize + len(data))
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if l.bytes.Load()+l.queued+n > l.maxBytes {
		l.mu.Unlock()
		return ErrFull
	}
	seq := l.nextSeq
	l.nextSeq++
	if cap(l.chunk)-len(l.chunk) < len(data) {
		l.chunk = make([]byte, 0, max(len(data), memChunkSize))
	}
	start := len(l.chunk)
	l.chunk = append(l.chunk, data...)
	l.refs = append(l.refs, memRef{seq, l.chunk[start:len(l.chunk):len(l.chunk)], done})
	l.queued += n
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

func (l *Memory) run() {
	defer close(l.done)
	var spare []memRef
	for {
		select {
		case <-l.wake:
			spare = l.flush(spare)
		case <-l.quit:
			l.flush(spare)
			return
		}
	}
}

// flush makes the queued entries visible and calls their callbacks.
func (l *Memory) flush(spare []memRef) []memRef {
	l.mu.Lock()
	refs := l.refs
	l.refs = spare[:0]
	l.mu.Unlock()
	if len(refs) == 0 {
		return refs
	}
	var data int
	l.stateMu.Lock()
	for _, r := range refs {
		l.entries = append(l.entries, Entry{Seq: r.seq, Data: r.data})
		data += len(r.data)
	}
	batch := int64(data + len(refs)*frameHeaderSize)
	size := l.bytes.Add(batch)
	l.lastDurable = refs[len(refs)-1].seq
	depth := len(l.entries)
	close(l.notify)
	l.notify = make(chan struct{})
	l.stateMu.Unlock()
	l.mu.Lock()
	l.queued -= batch
	l.mu.Unlock()

	l.m.appendedRecords.Add(float64(len(refs)))
	l.m.appendedBytes.Add(float64(data))
	l.m.batch.Observe(float64(len(refs)))
	l.m.depth.Set(float64(depth))
	l.m.size.Set(float64(size))
	for _, r := range refs {
		if r.fn != nil {
			r.fn(r.seq, nil)
		}
	}
	clear(refs)
	return refs
}

// Next returns up to max entries after the last one it returned, waiting for one. See Log.
func (l *Memory) Next(ctx context.Context, max int) ([]Entry, error) {
	max = clampMax(max)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l.stateMu.Lock()
		if l.isClosed() {
			l.stateMu.Unlock()
			return nil, ErrClosed
		}
		if n := min(len(l.entries)-l.rd, max); n > 0 {
			es := make([]Entry, n)
			copy(es, l.entries[l.rd:])
			l.rd += n
			l.stateMu.Unlock()
			return es, nil
		}
		ch := l.notify
		l.stateMu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.quit:
			return nil, ErrClosed
		case <-ch:
		}
	}
}

func (l *Memory) isClosed() bool {
	select {
	case <-l.quit:
		return true
	default:
		return false
	}
}

// Commit drops every entry with Seq <= seq. See Log.
func (l *Memory) Commit(seq uint64) error {
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	if l.isClosed() {
		return ErrClosed
	}
	if seq <= l.cursor {
		return nil
	}
	if seq > l.lastDurable {
		return fmt.Errorf("spool: commit %d: beyond the last durable entry %d", seq, l.lastDurable)
	}
	k := 0
	for k < len(l.entries) && l.entries[k].Seq <= seq {
		l.bytes.Add(-int64(frameHeaderSize + len(l.entries[k].Data)))
		k++
	}
	clear(l.entries[:k])
	l.entries = l.entries[k:]
	l.rd = max(l.rd-k, 0)
	l.cursor = seq
	l.m.depth.Set(float64(len(l.entries)))
	l.m.size.Set(float64(l.bytes.Load()))
	return nil
}

// Stats reports the log's state.
func (l *Memory) Stats() Stats {
	l.mu.Lock()
	next := l.nextSeq
	l.mu.Unlock()
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	return Stats{
		Depth:        int64(len(l.entries)),
		Bytes:        l.bytes.Load(),
		NextSeq:      next,
		CommittedSeq: l.cursor,
	}
}

// Close stops accepting appends, makes everything queued visible (calling its callbacks) and stops
// the log's goroutine. Idempotent.
func (l *Memory) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		close(l.quit)
		<-l.done
	})
	return nil
}
