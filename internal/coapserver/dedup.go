package coapserver

import (
	"net/netip"
	"sync"
)

// dedup remembers (peer, MID) pairs and the response sent for each, so a retransmitted CON gets the
// same answer again and reaches the handler once (RFC 7252 §4.5). It is sharded by peer, bounded by a
// per-peer cap and a global cap (oldest entries go first), and entries expire after the exchange
// lifetime. Expiry and eviction pop from insertion-ordered queues: there are no full scans.
type dedup struct {
	shards  []dedupShard
	perPeer int
	lifeCON int64 // nanoseconds
	lifeNON int64
}

// peerKey is an address and port packed into a comparable array without pointers, so the maps
// below hold no pointers for the garbage collector to scan.
type peerKey [18]byte

func makePeerKey(p netip.AddrPort) peerKey {
	var k peerKey
	a := p.Addr().As16()
	copy(k[:16], a[:])
	k[16], k[17] = byte(p.Port()>>8), byte(p.Port())
	return k
}

type dedupKey struct {
	peer peerKey
	mid  uint16
}

// inlineResp is the size of a cached response kept inside the map entry; longer ones go to a side map.
const inlineResp = 26

type entryState uint8

const (
	statePending  entryState = iota // request handed to the handler, no response yet
	stateEmptyAck                   // empty ACK sent, separate response pending or sent
	stateDone                       // response cached
)

type dedupEntry struct {
	exp   int64
	seq   uint32
	state entryState
	n     uint8 // length of resp when inline; 0xff = in the side map
	resp  [inlineResp]byte
}

type qitem struct {
	k   dedupKey
	seq uint32
	exp int64
}

// pitem is a per-peer queue item: the peer is implied.
type pitem struct {
	mid uint16
	seq uint32
}

type peerState struct {
	live int
	q    ring[pitem]
}

type dedupShard struct {
	mu    sync.Mutex
	m     map[dedupKey]dedupEntry
	big   map[dedupKey][]byte
	peers map[peerKey]*peerState
	con   ring[qitem] // insertion order, CON lifetime
	non   ring[qitem] // insertion order, NON lifetime
	seq   uint32
	cap   int
	_     [40]byte // keep shards on separate cache lines
}

func newDedup(shards, globalCap, perPeer int, lifeCON, lifeNON int64) *dedup {
	d := &dedup{shards: make([]dedupShard, shards), perPeer: perPeer, lifeCON: lifeCON, lifeNON: lifeNON}
	per := globalCap / shards
	if per < 1 {
		per = 1
	}
	for i := range d.shards {
		s := &d.shards[i]
		s.m = make(map[dedupKey]dedupEntry)
		s.big = make(map[dedupKey][]byte)
		s.peers = make(map[peerKey]*peerState)
		s.cap = per
	}
	return d
}

func (d *dedup) shard(k peerKey) *dedupShard {
	return &d.shards[k.hash()%uint32(len(d.shards))]
}

// hash is FNV-1a over the address and port, to pick a shard.
func (k peerKey) hash() uint32 {
	h := uint32(2166136261)
	for _, c := range k {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}

// lookupResult says what the caller should do with a request.
type lookupResult uint8

const (
	lookNew      lookupResult = iota // first sight: handle it
	lookReplay                       // duplicate with a cached response: resend resp
	lookInflight                     // duplicate still being handled: drop
)

// begin records a new exchange or reports a duplicate. For lookReplay the cached response is
// appended to buf and returned. For lookNew the returned seq identifies the entry for finish.
func (d *dedup) begin(k dedupKey, con bool, now int64, buf []byte) (lookupResult, uint32, []byte) {
	s := d.shard(k.peer)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now, d)
	if e, ok := s.m[k]; ok {
		switch e.state {
		case statePending:
			return lookInflight, 0, buf
		default:
			if e.n == 0xff {
				buf = append(buf, s.big[k]...)
			} else {
				buf = append(buf, e.resp[:e.n]...)
			}
			return lookReplay, 0, buf
		}
	}
	ps := s.peers[k.peer]
	if ps == nil {
		ps = &peerState{}
		s.peers[k.peer] = ps
	}
	for ps.live >= d.perPeer {
		s.evictPeerOldest(k.peer, ps)
	}
	for len(s.m) >= s.cap {
		if !s.evictOldest() {
			break
		}
	}
	s.seq++
	life := d.lifeNON
	q := &s.non
	if con {
		life, q = d.lifeCON, &s.con
	}
	it := qitem{k: k, seq: s.seq, exp: now + life}
	s.m[k] = dedupEntry{exp: it.exp, seq: s.seq, state: statePending}
	q.push(it)
	if q.len() > 2*len(s.m)+1024 {
		// Evicted entries leave stale items behind a live one at the front; when they are more
		// than half the queue, drop them in one pass (amortised O(1) per insert).
		q.filter(s.live)
	}
	if ps.q.len() > 2*ps.live+16 {
		s.pruneStale(k.peer, ps)
		if ps.q.len() > 2*ps.live+16 {
			peer := k.peer
			ps.q.filter(func(pi pitem) bool { return s.live(qitem{k: dedupKey{peer: peer, mid: pi.mid}, seq: pi.seq}) })
		}
	}
	ps.q.push(pitem{mid: k.mid, seq: s.seq})
	ps.live++
	return lookNew, s.seq, buf
}

// finish stores the response for an entry created by begin; state is stateDone or stateEmptyAck.
// If the entry was evicted meanwhile nothing is stored.
func (d *dedup) finish(k dedupKey, seq uint32, state entryState, resp []byte) {
	s := d.shard(k.peer)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[k]
	if !ok || e.seq != seq {
		return
	}
	e.state = state
	if e.n == 0xff {
		delete(s.big, k)
	}
	if len(resp) <= inlineResp {
		e.n = uint8(copy(e.resp[:], resp))
	} else {
		e.n = 0xff
		s.big[k] = append([]byte(nil), resp...)
	}
	s.m[k] = e
}

func (d *dedup) len() int {
	n := 0
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

func (s *dedupShard) live(it qitem) bool {
	e, ok := s.m[it.k]
	return ok && e.seq == it.seq
}

func (s *dedupShard) remove(k dedupKey) {
	if e := s.m[k]; e.n == 0xff {
		delete(s.big, k)
	}
	delete(s.m, k)
	if ps := s.peers[k.peer]; ps != nil {
		ps.live--
		if ps.live <= 0 {
			delete(s.peers, k.peer)
		}
	}
}

func (s *dedupShard) expire(now int64, d *dedup) {
	for _, q := range [2]*ring[qitem]{&s.con, &s.non} {
		// Items are in insertion order with one lifetime per queue, so expiry times never
		// decrease: stop at the first live one still in its window. Stale items (evicted
		// entries) at the front are dropped on the way.
		for q.len() > 0 {
			it := q.front()
			if s.live(it) {
				if it.exp > now {
					break
				}
				s.remove(it.k)
			}
			q.pop()
		}
	}
}

// evictOldest drops the oldest live entry of the shard.
func (s *dedupShard) evictOldest() bool {
	for {
		var q *ring[qitem]
		switch {
		case s.con.len() == 0 && s.non.len() == 0:
			return false
		case s.non.len() == 0:
			q = &s.con
		case s.con.len() == 0:
			q = &s.non
		case s.con.front().seq < s.non.front().seq:
			q = &s.con
		default:
			q = &s.non
		}
		it := q.pop()
		if s.live(it) {
			s.remove(it.k)
			return true
		}
	}
}

func (s *dedupShard) evictPeerOldest(peer peerKey, ps *peerState) {
	for ps.q.len() > 0 {
		pi := ps.q.pop()
		it := qitem{k: dedupKey{peer: peer, mid: pi.mid}, seq: pi.seq}
		if s.live(it) {
			// remove may delete ps from the map; the caller holds the pointer, so put it back.
			s.remove(it.k)
			if ps.live <= 0 {
				s.peers[peer] = ps
				ps.live = 0
			}
			return
		}
	}
	ps.live = 0
}

// pruneStale drops queue items of entries that no longer exist, from the front, so a peer's queue
// stays proportional to its live entries.
func (s *dedupShard) pruneStale(peer peerKey, ps *peerState) {
	for ps.q.len() > 0 {
		pi := ps.q.front()
		if s.live(qitem{k: dedupKey{peer: peer, mid: pi.mid}, seq: pi.seq}) {
			return
		}
		ps.q.pop()
	}
}

// ring is a growable FIFO queue.
type ring[T any] struct {
	buf        []T
	head, size int
}

func (r *ring[T]) len() int { return r.size }

func (r *ring[T]) front() T { return r.buf[r.head] }

func (r *ring[T]) push(v T) {
	if r.size == len(r.buf) {
		n := len(r.buf) * 2
		if n == 0 {
			n = 4
		}
		nb := make([]T, n)
		k := copy(nb, r.buf[r.head:])
		copy(nb[k:], r.buf[:r.head])
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.size)%len(r.buf)] = v
	r.size++
}

// filter keeps, in order, the items for which keep is true.
func (r *ring[T]) filter(keep func(T) bool) {
	var nb []T
	for i := 0; i < r.size; i++ {
		if v := r.buf[(r.head+i)%len(r.buf)]; keep(v) {
			nb = append(nb, v)
		}
	}
	r.buf, r.head, r.size = nb, 0, len(nb)
	if len(r.buf) == 0 {
		r.buf = nil
	}
}

func (r *ring[T]) pop() T {
	v := r.buf[r.head]
	var zero T
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	if r.size == 0 {
		r.head = 0
		if len(r.buf) > 64 {
			r.buf = nil // release memory of a queue that grew during a burst
		}
	}
	return v
}
