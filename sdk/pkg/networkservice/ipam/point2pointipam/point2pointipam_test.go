package point2pointipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"

	"vwire.dev/sdk/pkg/networkservice/ipam/internal/ipamtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// view is what a connection got, as a person reads it.
type view struct {
	Src, Dst, SrcRoutes, DstRoutes []string
}

func viewOf(conn *networkservice.Connection) view {
	ipc := conn.GetContext().GetIpContext()
	v := view{Src: ipc.GetSrcIpAddrs(), Dst: ipc.GetDstIpAddrs()}
	for _, r := range ipc.GetSrcRoutes() {
		v.SrcRoutes = append(v.SrcRoutes, r.GetPrefix())
	}
	for _, r := range ipc.GetDstRoutes() {
		v.DstRoutes = append(v.DstRoutes, r.GetPrefix())
	}
	return v
}

// linkOf is the view of a single-family link with src and dst the n-th addresses.
func linkOf(f ipamtest.Family, src, dst int) view {
	return view{Src: []string{f.Host(src)}, Dst: []string{f.Host(dst)}, SrcRoutes: []string{f.Host(dst)}, DstRoutes: []string{f.Host(src)}}
}

// env is the chain under test, with the IPAM's pools in reach.
type env struct {
	*ipamtest.Env
	ipam *server
}

func newEnv(prefixes ...string) *env {
	s := NewServer(ipamtest.Prefixes(prefixes...)...).(*server)
	return &env{Env: ipamtest.NewEnv(s), ipam: s}
}

func (e *env) inUse() (n int) {
	for _, p := range e.ipam.pools {
		n += p.InUse()
	}
	return n
}

func TestPoint2PointIPAM(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, f ipamtest.Family)
	}{
		{"first connection gets the two lowest addresses, routes to each other", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			require.Equal(t, linkOf(f, 2, 1), viewOf(conn))
			conn, err = e.Request("c2", nil)
			require.NoError(t, err)
			require.Equal(t, linkOf(f, 4, 3), viewOf(conn))
		}},
		{"refresh keeps the addresses and adds nothing", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			for range 3 {
				conn, err = e.Refresh(conn, nil)
				require.NoError(t, err)
				require.Equal(t, linkOf(f, 2, 1), viewOf(conn))
			}
			require.Equal(t, 2, e.inUse())
		}},
		{"a refresh that asks for the addresses it holds keeps them", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			conn, err = e.Refresh(conn, func(ipc *networkservice.IPContext) {
				ipc.SrcIpRequired, ipc.DstIpRequired = true, true
			})
			require.NoError(t, err)
			require.Equal(t, linkOf(f, 2, 1), viewOf(conn))
		}},
		{"excluded prefixes are avoided", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", ipamtest.Excluding(f.Prefix(2), f.Host(5), "192.168.0.0/16", "fe80::/10"))
			require.NoError(t, err)
			require.Equal(t, linkOf(f, 6, 4), viewOf(conn))
		}},
		{"a refresh that now excludes one end moves only that end", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			conn, err = e.Refresh(conn, func(ipc *networkservice.IPContext) {
				ipc.ExcludedPrefixes = []string{f.Host(2)}
			})
			require.NoError(t, err)
			require.Equal(t, linkOf(f, 3, 1), viewOf(conn))
			require.Equal(t, 2, e.inUse(), "the old address is released")
			other, err := e.Request("c2", nil)
			require.NoError(t, err)
			require.Equal(t, linkOf(f, 4, 2), viewOf(other))
		}},
		{"Close releases, and the same addresses are handed out again", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			e.Close(t, conn)
			require.Equal(t, 0, e.inUse())
			e.Close(t, conn) // twice is harmless
			conn, err = e.Request("c2", nil)
			require.NoError(t, err)
			require.Equal(t, linkOf(f, 2, 1), viewOf(conn))
		}},
		{"a failure after the IPAM releases what the first Request took", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			boom := errors.New("boom")
			e.Fail.FailRequests(boom)
			ipc := ipamtest.Excluding(f.Host(9))
			_, err := e.Request("c1", ipc)
			require.ErrorIs(t, err, boom)
			require.Equal(t, 0, e.inUse())
			require.Empty(t, ipc.GetSrcIpAddrs(), "the request is put back as it came")
			require.Empty(t, ipc.GetDstRoutes())
			e.Fail.FailRequests(nil)
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			require.Equal(t, linkOf(f, 2, 1), viewOf(conn))
		}},
		{"a failed refresh keeps the old addresses and releases the new", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			e.Fail.FailRequests(errors.New("boom"))
			_, err = e.Refresh(conn, func(ipc *networkservice.IPContext) {
				ipc.ExcludedPrefixes = []string{f.Prefix(2)}
			})
			require.Error(t, err)
			require.Equal(t, 2, e.inUse())
			e.Fail.FailRequests(nil)
			conn, err = e.Refresh(conn, nil)
			require.NoError(t, err)
			require.Equal(t, linkOf(f, 2, 1), viewOf(conn))
		}},
		{"a full pool is ResourceExhausted naming its CIDR", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(2))
			_, err := e.Request("c1", nil)
			require.NoError(t, err)
			_, err = e.Request("c2", nil)
			ipamtest.RequireCode(t, err, codes.ResourceExhausted, "point2pointipam", "no free", f.Prefix(2))
			_, err = e.Request("c3", ipamtest.Excluding(f.Host(9)))
			ipamtest.RequireCode(t, err, codes.ResourceExhausted, f.Prefix(2), "1 excluded prefixes")
			require.Equal(t, 2, e.inUse())
		}},
		{"an excluded prefix that does not parse is InvalidArgument naming it", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			_, err := e.Request("c1", ipamtest.Excluding(f.Prefix(2), f.Base+"0/200"))
			ipamtest.RequireCode(t, err, codes.InvalidArgument, "point2pointipam", "connection.context.ip_context.excluded_prefixes[1]", f.Base+"0/200")
			require.Equal(t, 0, e.inUse())
		}},
		{"an address that does not parse is InvalidArgument naming it", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			_, err := e.Request("c1", &networkservice.IPContext{SrcIpAddrs: []string{f.Host(2), f.Base + "2"}})
			ipamtest.RequireCode(t, err, codes.InvalidArgument, "connection.context.ip_context.src_ip_addrs[1]")
			require.Equal(t, 0, e.inUse())
		}},
		{"a client back after the endpoint restarted gets its addresses again", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", &networkservice.IPContext{
				SrcIpAddrs: []string{f.Host(7)}, DstIpAddrs: []string{f.Host(5)},
				SrcRoutes: []*networkservice.Route{{Prefix: f.Host(5)}}, DstRoutes: []*networkservice.Route{{Prefix: f.Host(7)}},
			})
			require.NoError(t, err)
			require.Equal(t, linkOf(f, 7, 5), viewOf(conn))
			other, err := e.Request("c2", nil)
			require.NoError(t, err)
			require.Equal(t, linkOf(f, 2, 1), viewOf(other))
		}},
		{"an address held by another connection is replaced, unless required", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			_, err := e.Request("c1", nil)
			require.NoError(t, err)
			taken := &networkservice.IPContext{SrcIpAddrs: []string{f.Host(2)}, DstRoutes: []*networkservice.Route{{Prefix: f.Host(2)}}}
			conn, err := e.Request("c2", taken)
			require.NoError(t, err)
			require.Equal(t, linkOf(f, 4, 3), viewOf(conn), "the stale address and its route are dropped")
			_, err = e.Request("c3", &networkservice.IPContext{SrcIpAddrs: []string{f.Host(2)}, SrcIpRequired: true})
			ipamtest.RequireCode(t, err, codes.FailedPrecondition, "src_ip_addrs[0] "+f.Host(2), "src_ip_required", "in use")
			require.Equal(t, 4, e.inUse())
		}},
		{"a required address that is now excluded fails the refresh", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			_, err = e.Refresh(conn, func(ipc *networkservice.IPContext) {
				ipc.DstIpRequired = true
				ipc.ExcludedPrefixes = []string{f.Host(1)}
			})
			ipamtest.RequireCode(t, err, codes.FailedPrecondition, "dst_ip_addrs[0] "+f.Host(1), "dst_ip_required", "excluded_prefixes")
			require.Equal(t, 2, e.inUse(), "the connection keeps what it had")
		}},
		{"a required address outside the pool is FailedPrecondition", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			other := map[int]string{32: "192.168.1.1/32", 128: "fd01::1/128"}[f.Bits]
			_, err := e.Request("c1", &networkservice.IPContext{SrcIpAddrs: []string{other}, SrcIpRequired: true})
			ipamtest.RequireCode(t, err, codes.FailedPrecondition, other, "outside the pool")
			conn, err := e.Request("c1", &networkservice.IPContext{SrcIpAddrs: []string{other}})
			require.NoError(t, err)
			require.Equal(t, []string{other, f.Host(2)}, viewOf(conn).Src, "an address of another pool is left alone")
		}},
		{"1,000 connections then all closed leave the pool empty", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(11)) // 1023 pairs in both families
			conns := make([]*networkservice.Connection, 1000)
			var wg sync.WaitGroup
			for w := range 4 { // four clients at once
				wg.Go(func() {
					for i := w; i < len(conns); i += 4 {
						conn, err := e.Request(fmt.Sprint("c", i), nil)
						assert.NoError(t, err)
						conns[i] = conn
					}
				})
			}
			wg.Wait()
			seen := map[string]bool{}
			for _, conn := range conns {
				v := viewOf(conn)
				require.False(t, seen[v.Src[0]] || seen[v.Dst[0]], "an address is handed out twice")
				seen[v.Src[0]], seen[v.Dst[0]] = true, true
			}
			require.Equal(t, 2000, e.inUse())
			for w := range 4 {
				wg.Go(func() {
					for i := w; i < len(conns); i += 4 {
						_, err := e.Chain.Close(context.Background(), conns[i])
						assert.NoError(t, err)
					}
				})
			}
			wg.Wait()
			require.Equal(t, 0, e.inUse())
			for i := range 1023 {
				_, err := e.Request(fmt.Sprint("again", i), nil)
				require.NoError(t, err)
			}
			_, err := e.Request("one too many", nil)
			ipamtest.RequireCode(t, err, codes.ResourceExhausted, f.Prefix(11))
		}},
	} {
		for _, f := range ipamtest.Families {
			t.Run(tc.name+"/"+f.Name, func(t *testing.T) { tc.run(t, f) })
		}
	}
}

func TestDualStack(t *testing.T) {
	e := newEnv("10.0.0.0/29", "fd00::/126")
	conn, err := e.Request("c1", ipamtest.Excluding("10.0.0.1/32", "fd00::2/128"))
	require.NoError(t, err)
	require.Equal(t, view{
		Src:       []string{"10.0.0.3/32", "fd00::3/128"},
		Dst:       []string{"10.0.0.2/32", "fd00::1/128"},
		SrcRoutes: []string{"10.0.0.2/32", "fd00::1/128"},
		DstRoutes: []string{"10.0.0.3/32", "fd00::3/128"},
	}, viewOf(conn))

	// The IPv6 pool is full: the IPv4 pair taken for c2 is given back.
	_, err = e.Request("c2", nil)
	ipamtest.RequireCode(t, err, codes.ResourceExhausted, "IPv6", "fd00::/126")
	require.Equal(t, 2, e.ipam.pools[0].InUse())
	require.Equal(t, 2, e.ipam.pools[1].InUse())

	e.Close(t, conn)
	require.Equal(t, 0, e.inUse())
}

func TestNewServerPanicsOnBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name     string
		prefixes []netip.Prefix
		want     string
	}{
		{"no prefixes", nil, "at least one prefix"},
		{"invalid", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), {}}, "prefix 1 is not a valid CIDR"},
		{"overlap", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.0.0.0/16")}, "10.0.0.0/24 and 10.0.0.0/16 overlap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ipamtest.RequirePanic(t, func() { NewServer(tc.prefixes...) }, "point2pointipam: ", tc.want)
		})
	}
}

func BenchmarkRequestClose(b *testing.B) {
	for _, bc := range []struct {
		name     string
		prefixes []string
		held     int // connections open while measuring
	}{
		{"IPv4_8", []string{"10.0.0.0/8"}, 10000},
		{"IPv6_64", []string{"fd00::/64"}, 10000},
		{"dual_stack", []string{"10.0.0.0/8", "fd00::/64"}, 10000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEnv(bc.prefixes...)
			for i := range bc.held {
				_, err := e.Request(fmt.Sprint("held", i), nil)
				require.NoError(b, err)
			}
			ipc := ipamtest.Excluding("192.168.0.0/16", "10.96.0.0/12", "fd10::/64")
			b.ReportAllocs()
			for b.Loop() {
				conn, err := e.Request("c", ipc)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := e.Chain.Close(context.Background(), conn); err != nil {
					b.Fatal(err)
				}
				ipc = ipamtest.Excluding("192.168.0.0/16", "10.96.0.0/12", "fd10::/64")
			}
		})
	}
}
