package coapserver

import "sync"

// Block-wise request bodies (RFC 7959 §2.3, §2.5): the endpoint reassembles a Block1 body and
// hands the handler one request carrying all of it, so the handler (and everything after it:
// validation, the spool) sees what a single datagram would have brought, and the last block's
// answer is the handler's. Each block is an exchange of its own: deduplication replays the 2.31
// Continue of a retransmitted block as it replays any answer.
//
// A body is kept per (peer, method, Uri-Path, Request-Tag): the peer being the address for plain
// CoAP and the session for DTLS, so that bodies of different resources, or of one client's
// concurrent transfers told apart by Request-Tag (RFC 9175), never mix. Block 0 with M starts
// a body (replacing one in progress under the same key); each further block must continue it
// (its NUM × size the bytes received so far) or restate the last block (a new MID after a lost
// answer), else 4.08 Request Entity Incomplete and the body is dropped; a block with M that is
// not exactly its size, or SZX 7 (reserved over UDP), is 4.00. Nothing is stored until the last
// block: then the handler answers, typically 2.04 once the record is durable.
//
// Sizes: a Size1 option over MaxRequestBody, or a body growing past it, gets 4.13 with Size1 =
// MaxRequestBody and a Block1 hint (the block size taken) at once (RFC 7959 §4, §2.9.3). A block larger than Options.BlockSize is taken,
// and the 2.31 asks for smaller ones (late negotiation, §2.5); otherwise the client's block size
// stands. Block1 in a GET or DELETE, which carry no body, gets 4.02.
//
// Memory is bounded: at most BlockMaxBytes of buffers (counted by capacity, plus bodyOverhead a
// body) over all peers, split over up to 16 shards by peer; at most BlockPerPeer bodies a peer
// (a new one replaces the peer's least recently active); a body with no block for BlockTimeout
// is dropped. When a shard's share is full, its least recently active bodies go first; a body
// that cannot grow even then is answered 5.03 with Max-Age.

// bodyOverhead is what a body in reassembly is counted for besides its buffer: its state, map
// entries and list links.
const bodyOverhead = 160

type bodyKey struct {
	peer peerKey
	h    uint64 // method, Uri-Path, Request-Tag: FNV-1a
}

type body struct {
	key        bodyKey
	buf        []byte
	lastOff    int   // where the last block taken began
	touched    int64 // when the last block came, endpoint time
	prev, next *body // the shard's activity list, least recent first
}

type bodyShard struct {
	mu         sync.Mutex
	m          map[bodyKey]*body
	peers      map[peerKey]int // bodies per peer
	head, tail *body
	bytes      int
	_          [40]byte
}

type reassembly struct {
	shards  []bodyShard
	budget  int // bytes per shard
	maxBody int
	perPeer int
	timeout int64
	m       *Metrics
}

func newReassembly(o Options, m *Metrics) *reassembly {
	maxBody := o.MaxRequestBody
	if maxBody <= 0 {
		maxBody = 64 << 10
	}
	n := min(16, max(1, o.BlockMaxBytes/(maxBody+bodyOverhead)))
	r := &reassembly{shards: make([]bodyShard, n), budget: o.BlockMaxBytes / n, maxBody: maxBody,
		perPeer: o.BlockPerPeer, timeout: int64(o.BlockTimeout), m: m}
	for i := range r.shards {
		r.shards[i].m = make(map[bodyKey]*body)
		r.shards[i].peers = make(map[peerKey]int)
	}
	return r
}

func (ra *reassembly) shard(p peerKey) *bodyShard {
	return &ra.shards[p.hash()%uint32(len(ra.shards))]
}

// bodyKeyOf is the key of r's body from peer p.
func bodyKeyOf(p peerKey, r *Request) bodyKey {
	h := uint64(14695981039346656037)
	add := func(b []byte) {
		for _, c := range b {
			h ^= uint64(c)
			h *= 1099511628211
		}
	}
	add([]byte{byte(r.Method())})
	for i := range r.NumPath() {
		seg := r.Path(i)
		add([]byte{'/', byte(len(seg))})
		add(seg)
	}
	for i := r.tag.lo; i < r.tag.hi; i++ {
		v := r.Msg.Options[i].Value
		add([]byte{'#', byte(len(v))})
		add(v)
	}
	return bodyKey{peer: p, h: h}
}

type putResult uint8

const (
	putMore       putResult = iota // block taken, more to come: 2.31
	putDone                        // last block taken: the body is whole
	putIncomplete                  // no body to continue, or a gap: 4.08
	putFull                        // no memory for it: 5.03
)

// put adds the block at byte offset off of a body, payload p, more telling whether blocks
// follow; size1 (0 if unknown) sizes the first buffer. With putDone it returns the whole body,
// which the reassembly no longer holds.
func (ra *reassembly) put(k bodyKey, num uint32, more bool, off int, p []byte, size1 int, now int64) (putResult, []byte) {
	s := ra.shard(k.peer)
	s.mu.Lock()
	defer s.mu.Unlock()
	ra.expire(s, now)
	b := s.m[k]
	if num == 0 {
		if b != nil {
			ra.remove(s, b)
		}
		for s.peers[k.peer] >= ra.perPeer {
			ra.remove(s, s.oldestOf(k.peer))
			ra.m.block1Out[outEvicted].Inc()
		}
		b = &body{key: k}
		s.m[k] = b
		s.peers[k.peer]++
		s.bytes += bodyOverhead
		ra.m.block1Bodies.Inc()
		ra.m.block1Bytes.Add(bodyOverhead)
		s.pushBack(b)
	} else {
		switch {
		case b == nil:
			return putIncomplete, nil
		case off == len(b.buf):
		case off == b.lastOff:
			b.buf = b.buf[:off] // the last block again, restated with a new MID
		default:
			ra.remove(s, b)
			return putIncomplete, nil
		}
	}
	if need := off + len(p); need > cap(b.buf) {
		// Size1 sizes the first buffer, but only up to 16 blocks: a tiny first block claiming a
		// large Size1 must not reserve much more memory than it brought.
		c := max(need, 2*cap(b.buf), min(size1, ra.maxBody, 16*len(p)))
		c = min(c, ra.maxBody)
		grow := c - cap(b.buf)
		for s.bytes+grow > ra.budget && s.head != nil && s.head != b {
			ra.remove(s, s.head)
			ra.m.block1Out[outEvicted].Inc()
		}
		if s.bytes+grow > ra.budget {
			ra.remove(s, b)
			return putFull, nil
		}
		nb := make([]byte, len(b.buf), c)
		copy(nb, b.buf)
		b.buf = nb
		s.bytes += grow
		ra.m.block1Bytes.Add(float64(grow))
	}
	b.buf = append(b.buf[:off], p...)
	b.lastOff = off
	b.touched = now
	s.unlink(b)
	s.pushBack(b)
	if more {
		return putMore, nil
	}
	whole := b.buf
	ra.remove(s, b)
	return putDone, whole
}

// drop forgets the body under k, if any.
func (ra *reassembly) drop(k bodyKey) {
	s := ra.shard(k.peer)
	s.mu.Lock()
	if b := s.m[k]; b != nil {
		ra.remove(s, b)
	}
	s.mu.Unlock()
}

// expireAll drops the bodies idle for longer than the timeout (the endpoint's timer calls it).
func (ra *reassembly) expireAll(now int64) {
	for i := range ra.shards {
		s := &ra.shards[i]
		s.mu.Lock()
		ra.expire(s, now)
		s.mu.Unlock()
	}
}

func (ra *reassembly) expire(s *bodyShard, now int64) {
	for s.head != nil && now-s.head.touched >= ra.timeout {
		ra.remove(s, s.head)
		ra.m.block1Out[outExpired].Inc()
	}
}

// len is the number of bodies in reassembly and the bytes they are counted for.
func (ra *reassembly) len() (bodies, bytes int) {
	for i := range ra.shards {
		s := &ra.shards[i]
		s.mu.Lock()
		bodies += len(s.m)
		bytes += s.bytes
		s.mu.Unlock()
	}
	return bodies, bytes
}

func (ra *reassembly) remove(s *bodyShard, b *body) {
	delete(s.m, b.key)
	if n := s.peers[b.key.peer] - 1; n > 0 {
		s.peers[b.key.peer] = n
	} else {
		delete(s.peers, b.key.peer)
	}
	s.unlink(b)
	freed := cap(b.buf) + bodyOverhead
	s.bytes -= freed
	ra.m.block1Bodies.Dec()
	ra.m.block1Bytes.Sub(float64(freed))
	b.buf = nil
}

// oldestOf is peer's least recently active body; the caller knows it has one.
func (s *bodyShard) oldestOf(peer peerKey) *body {
	for b := s.head; b != nil; b = b.next {
		if b.key.peer == peer {
			return b
		}
	}
	panic("coapserver: peer count without a body")
}

func (s *bodyShard) pushBack(b *body) {
	b.prev, b.next = s.tail, nil
	if s.tail != nil {
		s.tail.next = b
	} else {
		s.head = b
	}
	s.tail = b
}

func (s *bodyShard) unlink(b *body) {
	if b.prev != nil {
		b.prev.next = b.next
	} else if s.head == b {
		s.head = b.next
	}
	if b.next != nil {
		b.next.prev = b.prev
	} else if s.tail == b {
		s.tail = b.prev
	}
	b.prev, b.next = nil, nil
}
