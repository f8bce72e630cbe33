package ippool_test

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/tools/ippool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func pool(t testing.TB, ss ...string) *ippool.Pool {
	t.Helper()
	p, err := ippool.New(prefixes(ss...)...)
	require.NoError(t, err)
	return p
}

// drain allocates until the pool is exhausted and returns what it got, in order.
func drain(t *testing.T, p *ippool.Pool, exclude ...netip.Prefix) []string {
	t.Helper()
	var got []string
	for {
		a, err := p.Allocate(exclude...)
		if errors.Is(err, ippool.ErrExhausted) {
			return got
		}
		require.NoError(t, err)
		got = append(got, a.String())
		require.Less(t, len(got), 1000, "pool does not run out")
	}
}

func TestNewRejectsBadPrefixes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		prefixes []netip.Prefix
		want     string
	}{
		{"none", nil, "no prefixes"},
		{"zero prefix", []netip.Prefix{{}}, "not a valid CIDR"},
		{"mapped", prefixes("::ffff:10.0.0.0/120"), "IPv4-mapped"},
		{"mixed families", prefixes("10.0.0.0/24", "fd00::/64"), "different families"},
		{"overlap", prefixes("10.0.0.0/24", "10.1.0.0/16", "10.0.0.128/25"), "10.0.0.0/24 and 10.0.0.128/25 overlap"},
		{"same twice", prefixes("fd00::/64", "fd00::1/64"), "overlap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ippool.New(tc.prefixes...)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestAllocateOrderAndReserved(t *testing.T) {
	for _, tc := range []struct {
		name     string
		prefixes []string
		want     []string
	}{
		{"IPv4 /29 skips network and broadcast", []string{"10.0.0.0/29"}, []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}},
		{"IPv4 /30", []string{"10.0.0.4/30"}, []string{"10.0.0.5", "10.0.0.6"}},
		{"IPv4 /31 both usable (RFC 3021)", []string{"10.0.0.6/31"}, []string{"10.0.0.6", "10.0.0.7"}},
		{"IPv4 /32", []string{"10.0.0.9/32"}, []string{"10.0.0.9"}},
		{"IPv4 host bits ignored, prefixes in address order", []string{"10.0.1.9/30", "10.0.0.0/30"}, []string{"10.0.0.1", "10.0.0.2", "10.0.1.9", "10.0.1.10"}},
		{"IPv6 /125 skips subnet-router anycast only", []string{"fd00::/125"}, []string{"fd00::1", "fd00::2", "fd00::3", "fd00::4", "fd00::5", "fd00::6", "fd00::7"}},
		{"IPv6 /127 both usable (RFC 6164)", []string{"fd00::2/127"}, []string{"fd00::2", "fd00::3"}},
		{"IPv6 /128", []string{"fd00::9/128"}, []string{"fd00::9"}},
		{"IPv6 at the top of the space", []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"}, []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}},
		{"IPv4 at the top of the space", []string{"255.255.255.252/30"}, []string{"255.255.255.253", "255.255.255.254"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pool(t, tc.prefixes...)
			require.Equal(t, tc.want, drain(t, p))
			require.Equal(t, len(tc.want), p.InUse())
		})
	}
}

func TestAllocateHonoursExclusions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		prefixes []string
		exclude  []string
		want     []string
	}{
		{"IPv4 start excluded", []string{"10.0.0.0/29"}, []string{"10.0.0.0/30"}, []string{"10.0.0.4", "10.0.0.5", "10.0.0.6"}},
		{"IPv4 holes, overlapping and unsorted", []string{"10.0.0.0/29"}, []string{"10.0.0.4/31", "10.0.0.2/32", "10.0.0.4/32", "10.0.0.2/31"}, []string{"10.0.0.1", "10.0.0.6"}},
		{"IPv4 other family ignored", []string{"10.0.0.0/30"}, []string{"::/0"}, []string{"10.0.0.1", "10.0.0.2"}},
		{"IPv4 all excluded", []string{"10.0.0.0/24"}, []string{"0.0.0.0/0"}, nil},
		{"IPv4 excluded up to the top", []string{"255.255.255.0/24"}, []string{"255.255.255.3/32", "255.255.255.4/30", "255.255.255.8/29", "255.255.255.16/28", "255.255.255.32/27", "255.255.255.64/26", "255.255.255.128/25"}, []string{"255.255.255.1", "255.255.255.2"}},
		{"IPv4 one of two prefixes excluded", []string{"10.0.0.0/30", "10.1.0.0/30"}, []string{"10.0.0.0/16"}, []string{"10.1.0.1", "10.1.0.2"}},
		{"IPv6 start excluded", []string{"fd00::/125"}, []string{"fd00::/126"}, []string{"fd00::4", "fd00::5", "fd00::6", "fd00::7"}},
		{"IPv6 other family ignored", []string{"fd00::/126"}, []string{"0.0.0.0/0"}, []string{"fd00::1", "fd00::2", "fd00::3"}},
		{"IPv6 excluded up to the top", []string{"::/0"}, []string{"::/1", "8000::/1"}, nil},
		{"IPv6 huge prefix all excluded", []string{"fd00::/8"}, []string{"fd80::/9", "fd00::/9"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pool(t, tc.prefixes...)
			require.Equal(t, tc.want, drain(t, p, prefixes(tc.exclude...)...))
		})
	}
}

func TestAllocatePair(t *testing.T) {
	for _, tc := range []struct {
		name       string
		prefixes   []string
		exclude    []string
		want       [][2]string
		exhaustMsg string
	}{
		{"IPv4 consecutive pairs", []string{"10.0.0.0/29"}, nil, [][2]string{{"10.0.0.1", "10.0.0.2"}, {"10.0.0.3", "10.0.0.4"}, {"10.0.0.5", "10.0.0.6"}}, "no free address pair in 10.0.0.0/29"},
		{"IPv4 pair around a hole", []string{"10.0.0.0/29"}, []string{"10.0.0.2/31"}, [][2]string{{"10.0.0.1", "10.0.0.4"}, {"10.0.0.5", "10.0.0.6"}}, "outside the 1 excluded prefixes"},
		{"IPv4 pair across prefixes", []string{"10.0.0.0/30", "10.0.1.0/31"}, []string{"10.0.0.1/32"}, [][2]string{{"10.0.0.2", "10.0.1.0"}}, "10.0.0.0/30, 10.0.1.0/31"},
		{"IPv4 /31 is one pair", []string{"10.0.0.0/31"}, nil, [][2]string{{"10.0.0.0", "10.0.0.1"}}, "pool exhausted"},
		{"IPv6 consecutive pairs", []string{"fd00::/126"}, nil, [][2]string{{"fd00::1", "fd00::2"}}, "no free address pair in fd00::/126"},
		{"IPv6 /127 is one pair", []string{"fd00::/127"}, nil, [][2]string{{"fd00::", "fd00::1"}}, "pool exhausted"},
		{"IPv6 pair around a hole", []string{"fd00::/125"}, []string{"fd00::2/127"}, [][2]string{{"fd00::1", "fd00::4"}, {"fd00::5", "fd00::6"}}, "excluded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pool(t, tc.prefixes...)
			exclude := prefixes(tc.exclude...)
			var got [][2]string
			for {
				a, b, err := p.AllocatePair(exclude...)
				if err != nil {
					require.ErrorIs(t, err, ippool.ErrExhausted)
					require.ErrorContains(t, err, tc.exhaustMsg)
					break
				}
				got = append(got, [2]string{a.String(), b.String()})
			}
			require.Equal(t, tc.want, got)
			require.Equal(t, 2*len(tc.want), p.InUse(), "a failed pair takes nothing")
		})
	}
}

func TestTakeAndRelease(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prefix  string
		used    string // allocated before the case
		take    string
		exclude []string
		want    error
	}{
		{"IPv4 free", "10.0.0.0/24", "10.0.0.1", "10.0.0.7", nil, nil},
		{"IPv4 in use", "10.0.0.0/24", "10.0.0.1", "10.0.0.1", nil, ippool.ErrInUse},
		{"IPv4 network address", "10.0.0.0/24", "10.0.0.1", "10.0.0.0", nil, ippool.ErrReserved},
		{"IPv4 broadcast address", "10.0.0.0/24", "10.0.0.1", "10.0.0.255", nil, ippool.ErrReserved},
		{"IPv4 outside", "10.0.0.0/24", "10.0.0.1", "10.0.1.1", nil, ippool.ErrOutside},
		{"IPv4 other family", "10.0.0.0/24", "10.0.0.1", "fd00::1", nil, ippool.ErrOutside},
		{"IPv4 mapped in IPv6", "10.0.0.0/24", "10.0.0.1", "::ffff:10.0.0.9", nil, ippool.ErrOutside},
		{"IPv4 excluded", "10.0.0.0/24", "10.0.0.1", "10.0.0.9", []string{"10.0.0.8/29"}, ippool.ErrExcluded},
		{"IPv6 free", "fd00::/64", "fd00::1", "fd00::ffff", nil, nil},
		{"IPv6 free with zone", "fe80::/64", "fe80::1", "fe80::9%eth0", nil, nil},
		{"IPv6 last address is usable", "fd00::/64", "fd00::1", "fd00::ffff:ffff:ffff:ffff", nil, nil},
		{"IPv6 in use", "fd00::/64", "fd00::1", "fd00::1", nil, ippool.ErrInUse},
		{"IPv6 subnet-router anycast", "fd00::/64", "fd00::1", "fd00::", nil, ippool.ErrReserved},
		{"IPv6 outside", "fd00::/64", "fd00::1", "fd01::1", nil, ippool.ErrOutside},
		{"IPv6 excluded", "fd00::/64", "fd00::1", "fd00::9", []string{"fd00::/120"}, ippool.ErrExcluded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pool(t, tc.prefix)
			used, err := p.Allocate()
			require.NoError(t, err)
			require.Equal(t, tc.used, used.String())

			a := netip.MustParseAddr(tc.take)
			err = p.Take(a, prefixes(tc.exclude...)...)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				require.ErrorContains(t, err, a.WithZone("").String())
				require.Equal(t, 1, p.InUse(), "a failed Take takes nothing")
				require.Equal(t, tc.want == ippool.ErrInUse, p.Release(a), "only an address in use is released")
				require.False(t, p.Release(a))
				return
			}
			require.NoError(t, err)
			require.Equal(t, 2, p.InUse())
			require.True(t, p.Release(a))
			require.False(t, p.Release(a), "releasing twice is harmless")
			require.True(t, p.Release(used))
			require.Equal(t, 0, p.InUse())
			next, err := p.Allocate()
			require.NoError(t, err)
			require.Equal(t, tc.used, next.String(), "the released address comes first again")
		})
	}
}

// TestAgainstModel runs random allocations, takes and releases with random exclusions on a
// small pool and checks every answer against a plain set of addresses.
func TestAgainstModel(t *testing.T) {
	for _, prefix := range []string{"10.1.2.0/25", "fd00::80/121"} {
		t.Run(prefix, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			p := pool(t, prefix)
			base := netip.MustParsePrefix(prefix).Addr()
			addrAt := func(i int) netip.Addr {
				a := base
				for range i {
					a = a.Next()
				}
				return a
			}
			const size = 128
			used := map[int]bool{0: true} // the first address is reserved in both families
			if base.Is4() {
				used[size-1] = true // and the IPv4 broadcast address
			}
			held := map[int]bool{}
			for step := range 20000 {
				var exclude []netip.Prefix
				excluded := map[int]bool{}
				for range rng.IntN(3) {
					bits := 128 - 7 + rng.IntN(8)
					if base.Is4() {
						bits = 32 - 7 + rng.IntN(8)
					}
					e, err := addrAt(rng.IntN(size)).Prefix(bits)
					require.NoError(t, err)
					exclude = append(exclude, e)
					for i := range size {
						if e.Contains(addrAt(i)) {
							excluded[i] = true
						}
					}
				}
				lowest := func(from int) int {
					for i := from; i < size; i++ {
						if !used[i] && !held[i] && !excluded[i] {
							return i
						}
					}
					return -1
				}
				switch op := rng.IntN(4); op {
				case 0:
					a, err := p.Allocate(exclude...)
					want := lowest(0)
					if want < 0 {
						require.ErrorIs(t, err, ippool.ErrExhausted, "step %d", step)
						continue
					}
					require.NoError(t, err, "step %d", step)
					require.Equal(t, addrAt(want), a, "step %d", step)
					held[want] = true
				case 1:
					a, b, err := p.AllocatePair(exclude...)
					first := lowest(0)
					second := -1
					if first >= 0 {
						second = lowest(first + 1)
					}
					if second < 0 {
						require.ErrorIs(t, err, ippool.ErrExhausted, "step %d", step)
						continue
					}
					require.NoError(t, err, "step %d", step)
					require.Equal(t, []netip.Addr{addrAt(first), addrAt(second)}, []netip.Addr{a, b}, "step %d", step)
					held[first], held[second] = true, true
				case 2:
					i := rng.IntN(size)
					err := p.Take(addrAt(i), exclude...)
					switch {
					case used[i]:
						require.ErrorIs(t, err, ippool.ErrReserved, "step %d", step)
					case excluded[i]:
						require.ErrorIs(t, err, ippool.ErrExcluded, "step %d", step)
					case held[i]:
						require.ErrorIs(t, err, ippool.ErrInUse, "step %d", step)
					default:
						require.NoError(t, err, "step %d", step)
						held[i] = true
					}
				case 3:
					for range 1 + rng.IntN(3) {
						i := rng.IntN(size)
						require.Equal(t, held[i], p.Release(addrAt(i)), "step %d", step)
						delete(held, i)
					}
				}
				require.Equal(t, len(held), p.InUse(), "step %d", step)
			}
		})
	}
}

func TestLargePrefixesAreCheap(t *testing.T) {
	for _, tc := range []struct {
		prefix, exclude, first string
	}{
		{"10.0.0.0/8", "10.0.0.0/9", "10.128.0.0"},
		{"fd00::/64", "fd00::/65", "fd00::8000:0:0:0"},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			p := pool(t, tc.prefix)
			exclude := netip.MustParsePrefix(tc.exclude)
			a, err := p.Allocate(exclude)
			require.NoError(t, err)
			require.Equal(t, tc.first, a.String())
			for range 100000 {
				_, err := p.Allocate(exclude)
				require.NoError(t, err)
			}
			require.Equal(t, 100001, p.InUse())
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	for _, prefix := range []string{"10.0.0.0/16", "fd00::/112"} {
		t.Run(prefix, func(t *testing.T) {
			p := pool(t, prefix)
			var wg sync.WaitGroup
			var mu sync.Mutex
			seen := map[netip.Addr]bool{}
			for range 8 {
				wg.Go(func() {
					for range 500 {
						a, b, err := p.AllocatePair()
						require.NoError(t, err)
						mu.Lock()
						require.False(t, seen[a] || seen[b], "an address is handed out twice")
						seen[a], seen[b] = true, true
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			require.Equal(t, 8000, p.InUse())
			for a := range seen {
				require.True(t, p.Release(a))
			}
			require.Equal(t, 0, p.InUse())
		})
	}
}

// BenchmarkAllocateRelease measures one Allocate and one Release on large pools, fresh and
// fragmented into 50,000 free ranges, with and without excluded prefixes.
func BenchmarkAllocateRelease(b *testing.B) {
	for _, bc := range []struct {
		name     string
		prefix   string
		fragment bool
		exclude  []string
	}{
		{"IPv4_8_fresh", "10.0.0.0/8", false, nil},
		{"IPv4_8_fragmented", "10.0.0.0/8", true, nil},
		{"IPv4_8_fragmented_16_excluded", "10.0.0.0/8", true, []string{"10.0.0.0/12", "10.16.0.0/12", "10.32.0.0/12", "10.48.0.0/12", "10.64.0.0/12", "10.80.0.0/12", "10.96.0.0/12", "10.112.0.0/12", "192.168.0.0/16", "172.16.0.0/12", "10.128.0.1/32", "10.128.0.3/32", "10.128.0.5/32", "10.128.0.7/32", "10.128.0.9/32", "fd00::/8"}},
		{"IPv6_64_fresh", "fd00::/64", false, nil},
		{"IPv6_64_fragmented", "fd00::/64", true, nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := pool(b, bc.prefix)
			if bc.fragment {
				var got []netip.Addr
				for range 100000 {
					a, err := p.Allocate()
					require.NoError(b, err)
					got = append(got, a)
				}
				for i := 0; i < len(got); i += 2 {
					p.Release(got[i])
				}
			}
			exclude := prefixes(bc.exclude...)
			b.ReportAllocs()
			for b.Loop() {
				a, err := p.Allocate(exclude...)
				if err != nil {
					b.Fatal(err)
				}
				p.Release(a)
			}
		})
	}
}

func BenchmarkAllocatePairRelease(b *testing.B) {
	for _, prefix := range []string{"10.0.0.0/8", "fd00::/64"} {
		b.Run(prefix, func(b *testing.B) {
			p := pool(b, prefix)
			b.ReportAllocs()
			for b.Loop() {
				x, y, err := p.AllocatePair()
				if err != nil {
					b.Fatal(err)
				}
				p.Release(x)
				p.Release(y)
			}
		})
	}
}
