// Package ippool hands out IP addresses from a set of prefixes of one family, one at a time or
// in pairs for point-to-point links, and takes them back.
//
// It is the address book behind the IPAM elements (point2pointipam, singlepointipam): they share
// one Pool between all connections of an endpoint, and each request brings its own excluded
// prefixes (the client's pod and service CIDRs, its other vWires) that this allocation must avoid.
//
// Guarantees:
//   - The lowest free address that no excluded prefix covers comes first, so the outcome is
//     deterministic and an address released is the next one handed out.
//   - A pair is two single addresses (each a /32 or /128), not an aligned /31 or /30, so a link
//     costs two addresses and no network or broadcast address is wasted per link.
//   - Reserved, never handed out: in an IPv4 prefix of /30 or shorter its network (first) and
//     broadcast (last) address; in an IPv6 prefix of /126 or shorter its Subnet-Router anycast
//     address (first, RFC 4291 2.6.1). A /31 or /127 is a point-to-point link whose two
//     addresses are both usable (RFC 3021, RFC 6164); a /32 or /128 is its one address.
//   - Cost: the free addresses are kept as disjoint ranges in a balanced tree (a treap), so an
//     allocation takes O((k+1)·log n + k·log k) for n free ranges and k excluded prefixes,
//     whatever the size of the prefixes (a 10.0.0.0/8 or an fd00::/64 costs the same as a /24);
//     a release is O(log n). Neither allocates memory in the steady state.
//   - A Pool is safe for concurrent use.
package ippool

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// The errors of a Pool; each is returned wrapped, with the address or the pool's prefixes.
var (
	ErrExhausted = errors.New("pool exhausted")
	ErrOutside   = errors.New("address is outside the pool")
	ErrReserved  = errors.New("address is reserved")
	ErrExcluded  = errors.New("address is in an excluded prefix")
	ErrInUse     = errors.New("address is in use")
)

// Pool is a set of addresses to hand out, made of one or more prefixes of one family.
type Pool struct {
	prefixes []netip.Prefix // masked, sorted, disjoint
	is4      bool
	text     string

	mu    sync.Mutex
	free  tree
	inUse int
}

// New returns a pool of every usable address of prefixes, all free. The prefixes must be valid,
// of one family (an IPv4-mapped IPv6 prefix counts as neither: give it as IPv4) and must not
// overlap; host bits are ignored (10.0.0.5/24 is 10.0.0.0/24).
func New(prefixes ...netip.Prefix) (*Pool, error) {
	if len(prefixes) == 0 {
		return nil, errors.New("ippool: no prefixes")
	}
	p := &Pool{is4: prefixes[0].Addr().Is4(), free: tree{seed: 0x9e3779b97f4a7c15}}
	for i, prefix := range prefixes {
		switch {
		case !prefix.IsValid():
			return nil, fmt.Errorf("ippool: prefix %d (%v) is not a valid CIDR", i, prefix)
		case prefix.Addr().Is4In6():
			return nil, fmt.Errorf("ippool: %v is an IPv4-mapped IPv6 prefix; give it as an IPv4 prefix", prefix)
		case prefix.Addr().Is4() != p.is4:
			return nil, fmt.Errorf("ippool: %v and %v are of different families; make one pool per family", prefixes[0], prefix)
		}
		p.prefixes = append(p.prefixes, prefix.Masked())
	}
	slices.SortFunc(p.prefixes, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	texts := make([]string, len(p.prefixes))
	for i, prefix := range p.prefixes {
		// Sorted by first address, any overlap shows between neighbours.
		if i > 0 && p.prefixes[i-1].Overlaps(prefix) {
			return nil, fmt.Errorf("ippool: %v and %v overlap", p.prefixes[i-1], prefix)
		}
		texts[i] = prefix.String()
		p.free.insert(usable(prefix))
	}
	p.text = strings.Join(texts, ", ")
	return p, nil
}

// rangeOf returns the first and last address of a masked prefix.
func rangeOf(prefix netip.Prefix) span {
	lo := keyOf(prefix.Addr().As16())
	host := 128 - prefix.Bits()
	if prefix.Addr().Is4() {
		host = 32 - prefix.Bits()
	}
	return span{lo, lo.or(ones(host))}
}

// usable returns the addresses of a masked prefix that may be handed out.
func usable(prefix netip.Prefix) span {
	s := rangeOf(prefix)
	if prefix.Addr().Is4() && prefix.Bits() <= 30 {
		return span{s.lo.next(), s.hi.prev()}
	}
	if prefix.Addr().Is6() && prefix.Bits() <= 126 {
		return span{s.lo.next(), s.hi}
	}
	return s
}

// String lists the pool's prefixes, as error messages name them.
func (p *Pool) String() string { return p.text }

// Prefixes returns the pool's prefixes, masked and sorted.
func (p *Pool) Prefixes() []netip.Prefix { return slices.Clone(p.prefixes) }

// Is4 reports whether the pool holds IPv4 addresses.
func (p *Pool) Is4() bool { return p.is4 }

// Contains reports whether a lies in one of the pool's prefixes (reserved or not, free or not).
func (p *Pool) Contains(a netip.Addr) bool {
	return p.prefixOf(a).IsValid()
}

// prefixOf returns the pool's prefix that holds a, or the zero Prefix.
func (p *Pool) prefixOf(a netip.Addr) netip.Prefix {
	if !a.IsValid() || a.Is4() != p.is4 {
		return netip.Prefix{}
	}
	a = a.WithZone("")
	// The last prefix that starts at or below a is the only one that can hold it.
	i, found := slices.BinarySearchFunc(p.prefixes, a, func(prefix netip.Prefix, a netip.Addr) int {
		return prefix.Addr().Compare(a)
	})
	if !found {
		i--
	}
	if i < 0 || !p.prefixes[i].Contains(a) {
		return netip.Prefix{}
	}
	return p.prefixes[i]
}

// InUse returns how many addresses are handed out and not released.
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUse
}

// Allocate hands out the lowest free address outside the excluded prefixes (prefixes of the
// other family are ignored). It fails with ErrExhausted when there is none.
func (p *Pool) Allocate(exclude ...netip.Prefix) (netip.Addr, error) {
	var buf [16]span
	excluded := p.spans(buf[:0], exclude)
	p.mu.Lock()
	defer p.mu.Unlock()
	k, ok := p.lowest(u128{}, excluded)
	if !ok {
		return netip.Addr{}, p.exhausted(1, len(exclude))
	}
	p.free.take(k)
	p.inUse++
	return p.addr(k), nil
}

// AllocatePair hands out the two lowest free addresses outside the excluded prefixes, lower
// first, for the two ends of a point-to-point link. It takes both or neither.
func (p *Pool) AllocatePair(exclude ...netip.Prefix) (lower, upper netip.Addr, err error) {
	var buf [16]span
	excluded := p.spans(buf[:0], exclude)
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.lowest(u128{}, excluded)
	if !ok || a == maxU128 {
		return netip.Addr{}, netip.Addr{}, p.exhausted(2, len(exclude))
	}
	b, ok := p.lowest(a.next(), excluded)
	if !ok {
		return netip.Addr{}, netip.Addr{}, p.exhausted(2, len(exclude))
	}
	p.free.take(a)
	p.free.take(b)
	p.inUse += 2
	return p.addr(a), p.addr(b), nil
}

// Take hands out the address a itself, as a connection that held it asks to keep it. It fails,
// taking nothing, with ErrOutside, ErrReserved, ErrExcluded or ErrInUse.
func (p *Pool) Take(a netip.Addr, exclude ...netip.Prefix) error {
	prefix := p.prefixOf(a)
	if !prefix.IsValid() {
		return fmt.Errorf("ippool: %v: %w %s", a, ErrOutside, p.text)
	}
	a = a.WithZone("")
	k := keyOf(a.As16())
	if s := usable(prefix); k.less(s.lo) || s.hi.less(k) {
		return fmt.Errorf("ippool: %v: %w in %v", a, ErrReserved, prefix)
	}
	for _, e := range exclude {
		if e.Contains(a) {
			return fmt.Errorf("ippool: %v: %w %v", a, ErrExcluded, e)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.free.free(k) {
		return fmt.Errorf("ippool: %v: %w", a, ErrInUse)
	}
	p.free.take(k)
	p.inUse++
	return nil
}

// Release gives back an address handed out before. It reports false, and does nothing, for an
// address that is free already, reserved or outside the pool, so releasing twice is harmless.
func (p *Pool) Release(a netip.Addr) bool {
	prefix := p.prefixOf(a)
	if !prefix.IsValid() {
		return false
	}
	k := keyOf(a.WithZone("").As16())
	if s := usable(prefix); k.less(s.lo) || s.hi.less(k) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.free.free(k) {
		return false
	}
	p.free.put(k)
	p.inUse--
	return true
}

// lowest returns the least free address >= from outside the excluded spans (sorted, merged).
// Each turn of the loop steps past one excluded span, so it ends after at most len(excluded)+1
// tree lookups.
func (p *Pool) lowest(from u128, excluded []span) (u128, bool) {
	j := 0
	for {
		k, ok := p.free.first(from)
		if !ok {
			return u128{}, false
		}
		for j < len(excluded) && excluded[j].hi.less(k) {
			j++
		}
		if j == len(excluded) || k.less(excluded[j].lo) {
			return k, true
		}
		if excluded[j].hi == maxU128 {
			return u128{}, false
		}
		from = excluded[j].hi.next()
	}
}

// spans appends the excluded prefixes of the pool's family to buf as sorted, merged spans.
func (p *Pool) spans(buf []span, exclude []netip.Prefix) []span {
	for _, e := range exclude {
		if e.IsValid() && e.Addr().Is4() == p.is4 {
			buf = append(buf, rangeOf(e.Masked()))
		}
	}
	slices.SortFunc(buf, func(a, b span) int { return a.lo.cmp(b.lo) })
	merged := buf[:0]
	for _, s := range buf {
		if n := len(merged); n > 0 && !merged[n-1].hi.less(s.lo) {
			if merged[n-1].hi.less(s.hi) {
				merged[n-1].hi = s.hi
			}
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

func (p *Pool) addr(k u128) netip.Addr {
	a := netip.AddrFrom16(k.bytes())
	if p.is4 {
		return a.Unmap()
	}
	return a
}

func (p *Pool) exhausted(want, excluded int) error {
	what := "address"
	if want == 2 {
		what = "address pair"
	}
	if excluded > 0 {
		return fmt.Errorf("ippool: %w: no free %s in %s outside the %d excluded prefixes", ErrExhausted, what, p.text, excluded)
	}
	return fmt.Errorf("ippool: %w: no free %s in %s", ErrExhausted, what, p.text)
}
