// Package strictipam keeps a client to the endpoint's address space, where an NSM author finds
// NSM's strictipam: before the IPAM it wraps runs, it drops from the request's IP context every
// address outside the endpoint's prefixes (src_ip_addrs with the dst_routes to them, dst_ip_addrs
// with the src_routes to them), so that a client coming from another endpoint (after heal chose
// this one) gets addresses of this one instead of keeping foreign ones.
//
// vwire's IPAMs already refuse a client an address of their pools that is not free, and replace
// it; what strictipam adds is the removal of addresses of no pool of theirs, which they leave as
// the client sent them (NSM's "polite").
//
// Differences from NSM's, on purpose: prefixes are netip.Prefix; it keeps no pool of its own
// (NSM's mirrors the IPAM's allocations in a second pool): the wrapped IPAM is the one that
// knows which addresses are taken.
package strictipam

import (
	"context"
	"net/netip"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// NewServer returns newIPAM(prefixes...) behind the element that drops addresses outside
// prefixes.
func NewServer(newIPAM func(...netip.Prefix) networkservice.NetworkServiceServer, prefixes ...netip.Prefix) networkservice.NetworkServiceServer {
	if newIPAM == nil {
		panic("strictipam.NewServer: nil IPAM constructor")
	}
	return chain.NewNetworkServiceServer(&server{prefixes: prefixes}, newIPAM(prefixes...))
}

type server struct{ prefixes []netip.Prefix }

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if ipc := req.GetConnection().GetContext().GetIpContext(); ipc != nil {
		var gone []string
		ipc.SrcIpAddrs, gone = s.keep(ipc.GetSrcIpAddrs())
		ipc.DstRoutes = dropRoutes(ipc.GetDstRoutes(), gone)
		ipc.DstIpAddrs, gone = s.keep(ipc.GetDstIpAddrs())
		ipc.SrcRoutes = dropRoutes(ipc.GetSrcRoutes(), gone)
	}
	return next.Server(ctx).Request(ctx, req)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// keep splits addrs into those in the prefixes and the rest. An entry that does not parse is
// kept: the IPAM refuses it with InvalidArgument naming the field.
func (s *server) keep(addrs []string) (kept, gone []string) {
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a)
		if err != nil || s.contains(p.Addr()) {
			kept = append(kept, a)
		} else {
			gone = append(gone, a)
		}
	}
	return kept, gone
}

func (s *server) contains(a netip.Addr) bool {
	for _, p := range s.prefixes {
		if p.Contains(a.WithZone("")) {
			return true
		}
	}
	return false
}

// dropRoutes removes the routes to the addresses of gone (host routes, as the IPAMs write).
func dropRoutes(routes []*networkservice.Route, gone []string) []*networkservice.Route {
	if len(gone) == 0 {
		return routes
	}
	out := routes[:0]
	for _, r := range routes {
		drop := false
		for _, g := range gone {
			gp, err1 := netip.ParsePrefix(g)
			rp, err2 := netip.ParsePrefix(r.GetPrefix())
			drop = drop || (err1 == nil && err2 == nil && rp.IsSingleIP() && rp.Addr() == gp.Addr())
		}
		if !drop {
			out = append(out, r)
		}
	}
	return out
}
