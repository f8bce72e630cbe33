package singlepointipam

import (
	"errors"
	"fmt"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"

	"vwire.dev/sdk/pkg/networkservice/ipam/internal/ipamtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seated is what a connection got in a subnet of 8 host bits: its address and the endpoint's.
func seated(f ipamtest.Family, n int) view {
	return view{Src: []string{f.Addr(n, 8)}, Dst: []string{f.Addr(1, 8)}}
}

type view struct{ Src, Dst []string }

func viewOf(conn *networkservice.Connection) view {
	ipc := conn.GetContext().GetIpContext()
	return view{Src: ipc.GetSrcIpAddrs(), Dst: ipc.GetDstIpAddrs()}
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

// inUse counts the addresses handed out to clients (the endpoint's own are not counted).
func (e *env) inUse() (n int) {
	for _, family := range e.ipam.families {
		for _, sub := range family {
			n += sub.pool.InUse() - 1
		}
	}
	return n
}

func TestSinglePointIPAM(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, f ipamtest.Family)
	}{
		{"connections get the next addresses, all facing the endpoint's", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			require.Equal(t, seated(f, 2), viewOf(conn))
			require.Empty(t, conn.GetContext().GetIpContext().GetSrcRoutes(), "the subnet is on-link")
			conn, err = e.Request("c2", nil)
			require.NoError(t, err)
			require.Equal(t, seated(f, 3), viewOf(conn))
		}},
		{"refresh keeps the address and adds nothing", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			for range 3 {
				conn, err = e.Refresh(conn, func(ipc *networkservice.IPContext) { ipc.SrcIpRequired, ipc.DstIpRequired = true, true })
				require.NoError(t, err)
				require.Equal(t, seated(f, 2), viewOf(conn))
			}
			require.Equal(t, 1, e.inUse())
		}},
		{"excluded prefixes are avoided", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", ipamtest.Excluding(f.Addr(2, 1), f.Host(4), "192.168.0.0/16", "fe80::/10"))
			require.NoError(t, err)
			require.Equal(t, seated(f, 5), viewOf(conn))
		}},
		{"a refresh that now excludes the address moves it", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			conn, err = e.Refresh(conn, func(ipc *networkservice.IPContext) { ipc.ExcludedPrefixes = []string{f.Host(2)} })
			require.NoError(t, err)
			require.Equal(t, seated(f, 3), viewOf(conn))
			require.Equal(t, 1, e.inUse(), "the old address is released")
			other, err := e.Request("c2", nil)
			require.NoError(t, err)
			require.Equal(t, seated(f, 2), viewOf(other))
		}},
		{"Close releases, and the same address is handed out again", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			e.Close(t, conn)
			e.Close(t, conn)
			require.Equal(t, 0, e.inUse())
			conn, err = e.Request("c2", nil)
			require.NoError(t, err)
			require.Equal(t, seated(f, 2), viewOf(conn))
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
			require.Empty(t, ipc.GetDstIpAddrs())
			e.Fail.FailRequests(nil)
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			require.Equal(t, seated(f, 2), viewOf(conn))
		}},
		{"a failed refresh keeps the old address and releases the new", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			e.Fail.FailRequests(errors.New("boom"))
			_, err = e.Refresh(conn, func(ipc *networkservice.IPContext) { ipc.ExcludedPrefixes = []string{f.Host(2)} })
			require.Error(t, err)
			require.Equal(t, 1, e.inUse())
			e.Fail.FailRequests(nil)
			conn, err = e.Refresh(conn, nil)
			require.NoError(t, err)
			require.Equal(t, seated(f, 2), viewOf(conn))
		}},
		{"a full subnet is ResourceExhausted naming its CIDR", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(1)) // the endpoint and one client (RFC 3021, RFC 6164)
			conn, err := e.Request("c1", nil)
			require.NoError(t, err)
			require.Equal(t, view{Src: []string{f.Addr(1, 1)}, Dst: []string{f.Addr(0, 1)}}, viewOf(conn))
			_, err = e.Request("c2", nil)
			ipamtest.RequireCode(t, err, codes.ResourceExhausted, "singlepointipam", "no free", f.Prefix(1))
		}},
		{"a subnet whose endpoint address is excluded is not used", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			_, err := e.Request("c1", ipamtest.Excluding(f.Host(1)))
			ipamtest.RequireCode(t, err, codes.ResourceExhausted, f.Prefix(8), "1 excluded prefixes")
			require.Equal(t, 0, e.inUse())
		}},
		{"a field that does not parse is InvalidArgument naming it", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			_, err := e.Request("c1", ipamtest.Excluding(f.Host(2), "nope"))
			ipamtest.RequireCode(t, err, codes.InvalidArgument, "singlepointipam", "connection.context.ip_context.excluded_prefixes[1]", `"nope"`)
			_, err = e.Request("c1", &networkservice.IPContext{DstIpAddrs: []string{f.Base + "1"}})
			ipamtest.RequireCode(t, err, codes.InvalidArgument, "connection.context.ip_context.dst_ip_addrs[0]")
			require.Equal(t, 0, e.inUse())
		}},
		{"a client back after the endpoint restarted gets its address again", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			conn, err := e.Request("c1", &networkservice.IPContext{SrcIpAddrs: []string{f.Addr(7, 8)}, DstIpAddrs: []string{f.Addr(1, 8)}, SrcIpRequired: true, DstIpRequired: true})
			require.NoError(t, err)
			require.Equal(t, seated(f, 7), viewOf(conn))
			other, err := e.Request("c2", nil)
			require.NoError(t, err)
			require.Equal(t, seated(f, 2), viewOf(other))
		}},
		{"an address held by another connection is replaced, unless required", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			_, err := e.Request("c1", nil)
			require.NoError(t, err)
			conn, err := e.Request("c2", &networkservice.IPContext{SrcIpAddrs: []string{f.Addr(2, 8)}})
			require.NoError(t, err)
			require.Equal(t, seated(f, 3), viewOf(conn))
			_, err = e.Request("c3", &networkservice.IPContext{SrcIpAddrs: []string{f.Addr(2, 8)}, SrcIpRequired: true})
			ipamtest.RequireCode(t, err, codes.FailedPrecondition, "src_ip_addrs[0] "+f.Addr(2, 8), "src_ip_required", "in use")
			_, err = e.Request("c3", &networkservice.IPContext{SrcIpAddrs: []string{f.Host(9)}, DstIpAddrs: []string{f.Host(1)}, SrcIpRequired: true}) // any length
			require.NoError(t, err)
			require.Equal(t, 3, e.inUse())
		}},
		{"a required destination other than the endpoint's is FailedPrecondition", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			_, err := e.Request("c1", &networkservice.IPContext{DstIpAddrs: []string{f.Addr(9, 8)}, DstIpRequired: true})
			ipamtest.RequireCode(t, err, codes.FailedPrecondition, "dst_ip_addrs[0] "+f.Addr(9, 8), "dst_ip_required", "the endpoint's address in "+f.Prefix(8))
			require.Equal(t, 0, e.inUse())
			conn, err := e.Request("c1", &networkservice.IPContext{DstIpAddrs: []string{f.Addr(9, 8)}})
			require.NoError(t, err)
			require.Equal(t, seated(f, 2), viewOf(conn), "a stale destination in the subnet is replaced")
		}},
		{"a required address outside the prefixes is FailedPrecondition", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(8))
			other := map[int]string{32: "192.168.1.1/24", 128: "fd01::1/64"}[f.Bits]
			_, err := e.Request("c1", &networkservice.IPContext{SrcIpAddrs: []string{other}, SrcIpRequired: true})
			ipamtest.RequireCode(t, err, codes.FailedPrecondition, other, "outside the endpoint's prefixes")
			conn, err := e.Request("c1", &networkservice.IPContext{SrcIpAddrs: []string{other}})
			require.NoError(t, err)
			require.Equal(t, []string{other, f.Addr(2, 8)}, viewOf(conn).Src, "an address of another subnet is left alone")
		}},
		{"1,000 connections then all closed leave the pool empty", func(t *testing.T, f ipamtest.Family) {
			e := newEnv(f.Prefix(10))
			var conns []*networkservice.Connection
			seen := map[string]bool{}
			for i := range 1000 {
				conn, err := e.Request(fmt.Sprint("c", i), nil)
				require.NoError(t, err)
				src := viewOf(conn).Src[0]
				require.False(t, seen[src], "an address is handed out twice")
				seen[src] = true
				conns = append(conns, conn)
			}
			require.Equal(t, 1000, e.inUse())
			for _, conn := range conns {
				e.Close(t, conn)
			}
			require.Equal(t, 0, e.inUse())
		}},
	} {
		for _, f := range ipamtest.Families {
			t.Run(tc.name+"/"+f.Name, func(t *testing.T) { tc.run(t, f) })
		}
	}
}

func TestSeveralPrefixes(t *testing.T) {
	e := newEnv("10.0.0.0/31", "fd00::/127", "10.0.1.0/31", "fd00:1::/127")
	c1, err := e.Request("c1", nil)
	require.NoError(t, err)
	require.Equal(t, view{Src: []string{"10.0.0.1/31", "fd00::1/127"}, Dst: []string{"10.0.0.0/31", "fd00::/127"}}, viewOf(c1))

	// The first IPv6 subnet is excluded (the client already uses it), the IPv4 one is full.
	c2, err := e.Request("c2", ipamtest.Excluding("fd00::/64"))
	require.NoError(t, err)
	require.Equal(t, view{Src: []string{"10.0.1.1/31", "fd00:1::1/127"}, Dst: []string{"10.0.1.0/31", "fd00:1::/127"}}, viewOf(c2))

	_, err = e.Request("c3", nil)
	ipamtest.RequireCode(t, err, codes.ResourceExhausted, "IPv4", "10.0.0.0/31, 10.0.1.0/31")

	// Free IPv4 but full IPv6: the IPv4 address taken for c3 is given back.
	e.Close(t, c1)
	_, err = e.Request("c3", ipamtest.Excluding("fd00::1/128"))
	ipamtest.RequireCode(t, err, codes.ResourceExhausted, "IPv6", "fd00::/127, fd00:1::/127")
	require.Equal(t, 2, e.inUse())
}

func TestNewServerPanicsOnBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name     string
		prefixes []string
		want     string
	}{
		{"no prefixes", nil, "at least one prefix"},
		{"IPv4 /32", []string{"10.0.0.1/32"}, "10.0.0.1/32 has room for the endpoint only"},
		{"IPv6 /128", []string{"fd00::1/128"}, "fd00::1/128 has room for the endpoint only"},
		{"overlap", []string{"10.0.0.0/24", "fd00::/64", "10.0.0.128/25"}, "10.0.0.0/24 and 10.0.0.128/25 overlap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ipamtest.RequirePanic(t, func() { NewServer(ipamtest.Prefixes(tc.prefixes...)...) }, "singlepointipam: ", tc.want)
		})
	}
}
