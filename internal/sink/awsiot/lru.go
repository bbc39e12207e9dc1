package awsiot

import (
	"container/list"
	"sync"
)

// lru is a map bounded by a number of keys and, if it has a cost function, by the sum of its
// values' costs (bytes); it forgets the least recently used key first. It is safe for
// concurrent use.
type lru[K comparable, V any] struct {
	mu       sync.Mutex
	max      int
	maxBytes int         // 0: no bound
	cost     func(V) int // nil: every value costs 0
	bytes    int
	ll       *list.List // of *entry[K, V], most recent first
	m        map[K]*list.Element
}

type entry[K comparable, V any] struct {
	k    K
	v    V
	cost int
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, ll: list.New(), m: make(map[K]*list.Element)}
}

// newByteLRU is an lru also bounded by maxBytes of cost.
func newByteLRU[K comparable, V any](max, maxBytes int, cost func(V) int) *lru[K, V] {
	c := newLRU[K, V](max)
	c.maxBytes, c.cost = maxBytes, cost
	return c
}

// Get returns the value of k and marks it as recently used.
func (c *lru[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*entry[K, V]).v, true
	}
	var zero V
	return zero, false
}

// Add sets the value of k, evicting the least recently used key if the cache is full.
func (c *lru[K, V]) Add(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cost := 0
	if c.cost != nil {
		cost = c.cost(v)
	}
	if e, ok := c.m[k]; ok {
		en := e.Value.(*entry[K, V])
		c.bytes += cost - en.cost
		en.v, en.cost = v, cost
		c.ll.MoveToFront(e)
	} else {
		c.m[k] = c.ll.PushFront(&entry[K, V]{k, v, cost})
		c.bytes += cost
	}
	for c.ll.Len() > c.max || c.maxBytes > 0 && c.bytes > c.maxBytes && c.ll.Len() > 1 {
		last := c.ll.Back()
		c.ll.Remove(last)
		en := last.Value.(*entry[K, V])
		delete(c.m, en.k)
		c.bytes -= en.cost
	}
}

// Remove forgets k.
func (c *lru[K, V]) Remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.ll.Remove(e)
		delete(c.m, k)
		c.bytes -= e.Value.(*entry[K, V]).cost
	}
}

// Bytes is the sum of the costs of the values held.
func (c *lru[K, V]) Bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// Len is the number of keys held.
func (c *lru[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
