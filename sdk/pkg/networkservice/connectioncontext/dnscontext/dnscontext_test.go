package dnscontext_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"vwire.dev/sdk/pkg/networkservice/connectioncontext/dnscontext"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func dns(servers []string, domains ...string) *networkservice.DNSConfig {
	return &networkservice.DNSConfig{DnsServerIps: servers, SearchDomains: domains}
}

func TestAddsConfigsOnce(t *testing.T) {
	v4 := dns([]string{"10.96.0.10"}, "svc.cluster.local", "cluster.local")
	v6 := dns([]string{"fd10::a"}, "my-vpn.example")
	clientOwn := dns([]string{"192.168.1.1"})
	for _, tc := range []struct {
		name    string
		configs []*networkservice.DNSConfig
		context *networkservice.ConnectionContext
		want    []*networkservice.DNSConfig
	}{
		{"IPv4 into an empty connection", []*networkservice.DNSConfig{v4}, nil, []*networkservice.DNSConfig{v4}},
		{"IPv6 and IPv4 after the request's own", []*networkservice.DNSConfig{v6, v4}, &networkservice.ConnectionContext{DnsContext: &networkservice.DNSContext{Configs: []*networkservice.DNSConfig{clientOwn}}}, []*networkservice.DNSConfig{clientOwn, v6, v4}},
		{"one the request carries is not added again", []*networkservice.DNSConfig{v4, v6}, &networkservice.ConnectionContext{DnsContext: &networkservice.DNSContext{Configs: []*networkservice.DNSConfig{proto.Clone(v6).(*networkservice.DNSConfig)}}}, []*networkservice.DNSConfig{v6, v4}},
		{"none configured", nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := chain.NewNetworkServiceServer(dnscontext.NewServer(tc.configs...))
			conn, err := s.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c", Context: tc.context}})
			require.NoError(t, err)
			requireConfigs(t, tc.want, conn.GetContext().GetDnsContext().GetConfigs())

			for range 2 {
				conn, err = s.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: conn.Clone()})
				require.NoError(t, err)
				requireConfigs(t, tc.want, conn.GetContext().GetDnsContext().GetConfigs(), "a refresh adds no duplicates")
			}
			_, err = s.Close(context.Background(), conn)
			require.NoError(t, err)
		})
	}
}

func requireConfigs(t *testing.T, want, got []*networkservice.DNSConfig, msg ...any) {
	t.Helper()
	require.Len(t, got, len(want), msg...)
	for i := range want {
		require.True(t, proto.Equal(want[i], got[i]), "config %d: want %v, got %v", i, want[i], got[i])
	}
}

func TestConfigsAreCopied(t *testing.T) {
	cfg := dns([]string{"10.96.0.10"}, "cluster.local")
	s := dnscontext.NewServer(cfg)
	cfg.SearchDomains[0] = "changed.later"
	conn, err := s.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c"}})
	require.NoError(t, err)
	require.Equal(t, []string{"cluster.local"}, conn.GetContext().GetDnsContext().GetConfigs()[0].GetSearchDomains())
	conn.GetContext().GetDnsContext().GetConfigs()[0].DnsServerIps[0] = "10.0.0.1"
	conn, err = s.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "d"}})
	require.NoError(t, err)
	require.Equal(t, []string{"10.96.0.10"}, conn.GetContext().GetDnsContext().GetConfigs()[0].GetDnsServerIps(), "connections do not share the config")
}

func TestNewServerPanicsOnBadConfig(t *testing.T) {
	require.PanicsWithValue(t, "dnscontext: NewServer: config 1 is nil", func() {
		dnscontext.NewServer(dns([]string{"10.96.0.10"}), nil)
	})
	require.PanicsWithValue(t, `dnscontext: NewServer: config 0: dns_server_ips[1] "dns.local" is not an IP address`, func() {
		dnscontext.NewServer(dns([]string{"fd10::a", "dns.local"}))
	})
}
