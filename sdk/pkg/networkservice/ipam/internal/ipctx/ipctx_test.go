package ipctx_test

import (
	"net/netip"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/ipam/internal/ipctx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSetAddrAndRoute(t *testing.T) {
	inPool := func(p netip.Prefix) bool { return netip.MustParsePrefix("10.0.0.0/24").Contains(p.Addr()) }
	for _, tc := range []struct {
		name string
		list []string
		want string
		out  []string
	}{
		{"into nothing", nil, "10.0.0.2/32", []string{"10.0.0.2/32"}},
		{"already there once", []string{"fd00::2/128", "10.0.0.2/32"}, "10.0.0.2/32", []string{"fd00::2/128", "10.0.0.2/32"}},
		{"duplicates and stale grants dropped, others kept", []string{"10.0.0.7/32", "10.0.0.2/32", "192.168.0.1/24", "10.0.0.2/32", "10.0.0.9/24"}, "10.0.0.2/32", []string{"10.0.0.2/32", "192.168.0.1/24"}},
		{"replaces an old grant", []string{"10.0.0.7/32", "fd00::7/128"}, "10.0.0.3/32", []string{"fd00::7/128", "10.0.0.3/32"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.out, ipctx.SetAddr(append([]string(nil), tc.list...), netip.MustParsePrefix(tc.want), inPool))
			var routes []*networkservice.Route
			for _, p := range tc.list {
				routes = append(routes, &networkservice.Route{Prefix: p, NextHop: "keep"})
			}
			var got []string
			for _, r := range ipctx.SetRoute(routes, netip.MustParsePrefix(tc.want), inPool) {
				got = append(got, r.GetPrefix())
			}
			require.Equal(t, tc.out, got)
		})
	}
}

func TestParseNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		ipc  *networkservice.IPContext
		want string
	}{
		{&networkservice.IPContext{SrcIpAddrs: []string{"10.0.0.1"}}, `elem: connection.context.ip_context.src_ip_addrs[0]: "10.0.0.1" is not`},
		{&networkservice.IPContext{DstIpAddrs: []string{"fd00::1/128", "fd00::1/129"}}, `connection.context.ip_context.dst_ip_addrs[1]: "fd00::1/129"`},
		{&networkservice.IPContext{ExcludedPrefixes: []string{"10.0.0.0/8", ""}}, `connection.context.ip_context.excluded_prefixes[1]: ""`},
	} {
		_, err := ipctx.Parse("elem", tc.ipc)
		require.Equal(t, codes.InvalidArgument, status.Code(err))
		require.Contains(t, status.Convert(err).Message(), tc.want)
	}
	r, err := ipctx.Parse("elem", &networkservice.IPContext{SrcIpAddrs: []string{"10.0.0.1/32"}, ExcludedPrefixes: []string{"10.0.0.0/30"}})
	require.NoError(t, err)
	require.True(t, r.IsExcluded(netip.MustParseAddr("10.0.0.3")))
	require.False(t, r.IsExcluded(netip.MustParseAddr("10.0.0.4")))
}
