// Package lru is a bounded map that forgets its least recently used entry when a new one would
// not fit.
//
// It is for results that cost something to compute and never change for their key: the claims
// of a token, a token's verified signature. Such a cache needs no expiry, only a bound, so that
// a peer sending ever new keys costs memory in proportion to the bound, not to its traffic. A
// Cache is safe for concurrent use; values are shared by every caller that gets them, so they
// must be treated as read only.
package lru

import (
	"container/list"
	"sync"
)

// Cache holds at most its size of entries, the most recently used ones.
type Cache[K comparable, V any] struct {
	size int

	mu      sync.Mutex
	entries map[K]*list.Element // of *entry[K, V]
	order   list.List           // most recently used first
}

type entry[K comparable, V any] struct {
	key   K
	value V
}

// New returns an empty Cache for at most size entries (at least 1).
func New[K comparable, V any](size int) *Cache[K, V] {
	return &Cache[K, V]{size: max(size, 1), entries: map[K]*list.Element{}}
}

// Get returns the value of key and marks it used, if the cache has it.
func (c *Cache[K, V]) Get(key K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*entry[K, V]).value, true
}

// Add sets the value of key, forgetting the least recently used entry if the cache was full.
func (c *Cache[K, V]) Add(key K, value V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		e.Value.(*entry[K, V]).value = value
		c.order.MoveToFront(e)
		return
	}
	c.entries[key] = c.order.PushFront(&entry[K, V]{key: key, value: value})
	if c.order.Len() > c.size {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.entries, oldest.Value.(*entry[K, V]).key)
	}
}

// Len returns how many entries the cache holds.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
