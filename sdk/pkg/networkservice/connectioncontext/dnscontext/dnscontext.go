// Package dnscontext adds an endpoint's DNS configurations (name servers and search domains) to
// connection.context.dns_context on every Request, so that the client side can resolve the names
// of the network service it joins.
//
// Guarantees: a configuration is added once; one equal to it (the same servers and domains, in
// the same order) that the request already carries, as every refresh does, is not added again.
// The element changes the request only: the configurations travel back with the connection, and
// Close has nothing to undo.
//
// Place: in an endpoint's chain, anywhere before the element that answers the Request.
package dnscontext

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// NewServer returns the element that adds configs to every connection. The configs come from
// the program: a nil one, or a server address that is not an IP address, panics, naming it.
func NewServer(configs ...*networkservice.DNSConfig) networkservice.NetworkServiceServer {
	s := &server{}
	for i, c := range configs {
		if c == nil {
			panic(fmt.Sprintf("dnscontext: NewServer: config %d is nil", i))
		}
		for j, ip := range c.GetDnsServerIps() {
			if _, err := netip.ParseAddr(ip); err != nil {
				panic(fmt.Sprintf("dnscontext: NewServer: config %d: dns_server_ips[%d] %q is not an IP address", i, j, ip))
			}
		}
		s.configs = append(s.configs, proto.Clone(c).(*networkservice.DNSConfig))
	}
	return s
}

type server struct {
	configs []*networkservice.DNSConfig
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn := req.GetConnection()
	if conn.GetContext() == nil {
		conn.Context = &networkservice.ConnectionContext{}
	}
	if conn.GetContext().GetDnsContext() == nil {
		conn.Context.DnsContext = &networkservice.DNSContext{}
	}
	dns := conn.GetContext().GetDnsContext()
	for _, c := range s.configs {
		if !carries(dns.GetConfigs(), c) {
			dns.Configs = append(dns.Configs, proto.Clone(c).(*networkservice.DNSConfig))
		}
	}
	return next.Server(ctx).Request(ctx, req)
}

func carries(configs []*networkservice.DNSConfig, c *networkservice.DNSConfig) bool {
	for _, have := range configs {
		if proto.Equal(have, c) {
			return true
		}
	}
	return false
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}
