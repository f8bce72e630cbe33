package ippool

import "encoding/binary"

// u128 is an address as a 128-bit number: IPv6 as is, IPv4 as its IPv4-mapped IPv6 form. A pool
// holds one family only, so the two never meet in one tree.
type u128 struct{ hi, lo uint64 }

var maxU128 = u128{^uint64(0), ^uint64(0)}

func keyOf(b [16]byte) u128 {
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func (a u128) bytes() (b [16]byte) {
	binary.BigEndian.PutUint64(b[:8], a.hi)
	binary.BigEndian.PutUint64(b[8:], a.lo)
	return b
}

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) cmp(b u128) int {
	switch {
	case a.less(b):
		return -1
	case b.less(a):
		return 1
	}
	return 0
}

// next is a+1, wrapping at the top.
func (a u128) next() u128 {
	if a.lo == ^uint64(0) {
		return u128{a.hi + 1, 0}
	}
	return u128{a.hi, a.lo + 1}
}

// prev is a-1, wrapping at zero.
func (a u128) prev() u128 {
	if a.lo == 0 {
		return u128{a.hi - 1, ^uint64(0)}
	}
	return u128{a.hi, a.lo - 1}
}

func (a u128) or(b u128) u128 { return u128{a.hi | b.hi, a.lo | b.lo} }

// ones returns a number with its n lowest bits set (0 <= n <= 128).
func ones(n int) u128 {
	switch {
	case n >= 128:
		return maxU128
	case n > 64:
		return u128{^uint64(0) >> (128 - n), ^uint64(0)}
	case n == 0:
		return u128{}
	}
	return u128{0, ^uint64(0) >> (64 - n)}
}

// span is the addresses lo..hi, both included.
type span struct{ lo, hi u128 }

// node is one span of free addresses in a treap ordered by lo (a binary search tree that is a
// heap on prio, so its depth stays O(log n) with random priorities).
type node struct {
	span
	prio        uint64
	left, right *node
}

// tree is the set of free addresses as disjoint, non-adjacent spans.
type tree struct {
	root  *node
	seed  uint64
	spare *node // nodes removed, linked by right, for insert to reuse
}

// around returns the span with the greatest lo <= k and the span with the least lo > k.
func (t *tree) around(k u128) (floor, ceil *node) {
	for n := t.root; n != nil; {
		if k.less(n.lo) {
			ceil, n = n, n.left
		} else {
			floor, n = n, n.right
		}
	}
	return floor, ceil
}

// free reports whether k is free.
func (t *tree) free(k u128) bool {
	floor, _ := t.around(k)
	return floor != nil && !floor.hi.less(k)
}

// first returns the least free address >= k.
func (t *tree) first(k u128) (u128, bool) {
	floor, ceil := t.around(k)
	switch {
	case floor != nil && !floor.hi.less(k):
		return k, true
	case ceil != nil:
		return ceil.lo, true
	}
	return u128{}, false
}

// take removes the free address k from its span.
func (t *tree) take(k u128) {
	n, _ := t.around(k)
	switch {
	case n.lo == k && n.hi == k:
		t.remove(k)
	case n.lo == k:
		n.lo = k.next() // still below the next span: the order holds without moving the node
	case n.hi == k:
		n.hi = k.prev()
	default:
		rest := span{k.next(), n.hi}
		n.hi = k.prev()
		t.insert(rest)
	}
}

// put adds the address k, which is not free, joining it to the spans next to it.
func (t *tree) put(k u128) {
	floor, ceil := t.around(k)
	joinLeft := floor != nil && floor.hi.next() == k
	joinRight := ceil != nil && k.next() == ceil.lo
	switch {
	case joinLeft && joinRight:
		floor.hi = ceil.hi
		t.remove(ceil.lo)
	case joinLeft:
		floor.hi = k
	case joinRight:
		ceil.lo = k
	default:
		t.insert(span{k, k})
	}
}

// insert adds s, which neither overlaps nor touches a span of the tree.
func (t *tree) insert(s span) {
	// xorshift64*: cheap, and good enough to keep a treap balanced.
	t.seed ^= t.seed >> 12
	t.seed ^= t.seed << 25
	t.seed ^= t.seed >> 27
	n := t.spare
	if n != nil {
		t.spare = n.right
		n.left, n.right = nil, nil
	} else {
		n = &node{}
	}
	n.span, n.prio = s, t.seed*2685821657736338717
	left, right := split(t.root, s.lo)
	t.root = merge(merge(left, n), right)
}

// split cuts the treap n into the spans with lo < k and those with lo >= k.
func split(n *node, k u128) (left, right *node) {
	if n == nil {
		return nil, nil
	}
	if n.lo.less(k) {
		n.right, right = split(n.right, k)
		return n, right
	}
	left, n.left = split(n.left, k)
	return left, n
}

// merge joins two treaps whose spans all lie below (left) and above (right) each other.
func merge(left, right *node) *node {
	switch {
	case left == nil:
		return right
	case right == nil:
		return left
	case left.prio > right.prio:
		left.right = merge(left.right, right)
		return left
	}
	right.left = merge(left, right.left)
	return right
}

// remove drops the span that starts at k and keeps its node for reuse.
func (t *tree) remove(k u128) {
	var gone *node
	t.root = unlink(t.root, k, &gone)
	if gone != nil {
		gone.left, gone.right, t.spare = nil, t.spare, gone
	}
}

// unlink returns the treap n without the node that starts at k, which it stores in gone.
func unlink(n *node, k u128, gone **node) *node {
	if n == nil {
		return nil
	}
	switch k.cmp(n.lo) {
	case -1:
		n.left = unlink(n.left, k, gone)
	case 1:
		n.right = unlink(n.right, k, gone)
	default:
		*gone = n
		return merge(n.left, n.right)
	}
	return n
}
