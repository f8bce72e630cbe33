// Package excludedprefixes adds prefixes that a connection's addresses must avoid to the
// request's connection.context.ip_context.excluded_prefixes, so that the IPAM downstream hands
// out none of them.
//
// The server adds the prefixes it is given: on an nsmgr or an endpoint, typically the cluster's
// pod and service CIDRs, which a vWire must not shadow.
//
// The client, in a workload, adds them too, and also the prefixes its other connections hold:
// their addresses (as the prefix each was handed out with, so a shared /24 excludes the whole
// subnet) and their host routes. Two vWires of one client then never overlap, even when their
// endpoints draw from the same CIDR. After the rest of the chain answered, it checks that no
// address handed out lies in a prefix it added: an endpoint that ignored them gets the
// connection closed again and the request fails with FailedPrecondition, naming the address.
//
// Guarantees:
//   - The list has no duplicates (compared as masked prefixes: 10.0.0.5/24 is 10.0.0.0/24):
//     existing entries keep their order and text, added ones follow.
//   - An entry of the request that does not parse is InvalidArgument naming it; dropping it
//     could let an IPAM hand out an address the client already uses.
//   - The client takes what it added out of the request and of the connection it returns, so
//     its additions do not pile up across refreshes; a refresh does not exclude the
//     connection's own addresses. Close forgets the connection's prefixes.
//
// Place: the server before the IPAM. The client after metadata (it keeps each connection's
// prefixes there) and before the elements that send the request on.
package excludedprefixes

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// closeTimeout bounds the Close the client sends after an endpoint ignored its exclusions.
const closeTimeout = 15 * time.Second

// NewServer returns the element that adds prefixes to every request. The prefixes come from the
// program: an invalid one panics, naming it.
func NewServer(prefixes ...netip.Prefix) networkservice.NetworkServiceServer {
	return &server{prefixes: configured("NewServer", prefixes)}
}

// NewClient returns the element that adds prefixes, and those of the client's other
// connections, to every request of the client, and checks the answers. An invalid prefix
// panics, naming it.
func NewClient(prefixes ...netip.Prefix) networkservice.NetworkServiceClient {
	return adapters.NewServerToClient(&client{prefixes: configured("NewClient", prefixes), held: map[netip.Prefix]int{}})
}

func configured(constructor string, prefixes []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for i, p := range prefixes {
		if !p.IsValid() {
			panic(fmt.Sprintf("excludedprefixes: %s: prefix %d is not a valid CIDR", constructor, i))
		}
		if !slices.Contains(out, p.Masked()) {
			out = append(out, p.Masked())
		}
	}
	return out
}

type server struct {
	prefixes []netip.Prefix
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if _, err := add(ipContextOf(req.GetConnection()), s.prefixes); err != nil {
		return nil, err
	}
	return next.Server(ctx).Request(ctx, req)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func ipContextOf(conn *networkservice.Connection) *networkservice.IPContext {
	if conn.GetContext() == nil {
		conn.Context = &networkservice.ConnectionContext{}
	}
	if conn.GetContext().GetIpContext() == nil {
		conn.Context.IpContext = &networkservice.IPContext{}
	}
	return conn.GetContext().GetIpContext()
}

// add appends to ipc's excluded prefixes those of more it lacks, drops its duplicates, and
// returns what it appended.
func add(ipc *networkservice.IPContext, more []netip.Prefix) (added []netip.Prefix, err error) {
	seen := map[netip.Prefix]bool{}
	var list []string
	for i, text := range ipc.GetExcludedPrefixes() {
		p, err := netip.ParsePrefix(text)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "excludedprefixes: connection.context.ip_context.excluded_prefixes[%d]: %q is not a CIDR such as 10.96.0.0/12 or fd00::/64; fix or drop it", i, text)
		}
		if !seen[p.Masked()] {
			seen[p.Masked()] = true
			list = append(list, text)
		}
	}
	for _, p := range more {
		if !seen[p] {
			seen[p] = true
			list = append(list, p.String())
			added = append(added, p)
		}
	}
	ipc.ExcludedPrefixes = list
	return added, nil
}

// heldKey keeps the prefixes a connection of the client holds, as counted in client.held.
var heldKey = metadata.NewKey[[]netip.Prefix]("excludedprefixes")

type client struct {
	prefixes []netip.Prefix
	mu       sync.Mutex
	held     map[netip.Prefix]int // prefix -> how many of the client's connections hold it
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	ipc := ipContextOf(req.GetConnection())
	m := metadata.Client(ctx)
	own, _ := heldKey.Load(m)
	asked := ipc.GetExcludedPrefixes()
	added, err := add(ipc, append(slices.Clone(c.prefixes), c.others(own)...))
	if err != nil {
		return nil, err
	}
	conn, err := next.Server(ctx).Request(ctx, req)
	ipc.ExcludedPrefixes = asked
	if err != nil {
		return nil, err
	}
	got := conn.GetContext().GetIpContext()
	if addr, in, ok := breach(got, added); ok {
		undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_, _ = next.Server(undo).Close(undo, conn)
		c.swap(own, nil)
		heldKey.Delete(m)
		return nil, status.Errorf(codes.FailedPrecondition, "excludedprefixes: endpoint %q handed out %s, which lies in excluded prefix %v (held by another connection of this client or configured); its IPAM must honour ip_context.excluded_prefixes",
			conn.GetNetworkServiceEndpointName(), addr, in)
	}
	now := holds(got)
	c.swap(own, now)
	heldKey.Store(m, now)
	got.ExcludedPrefixes = slices.DeleteFunc(slices.Clone(got.GetExcludedPrefixes()), func(text string) bool {
		p, err := netip.ParsePrefix(text)
		return err == nil && slices.Contains(added, p.Masked()) && !slices.Contains(asked, text)
	})
	return conn, nil
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if own, ok := heldKey.LoadAndDelete(metadata.Client(ctx)); ok {
		c.swap(own, nil)
	}
	return next.Server(ctx).Close(ctx, conn)
}

// others returns, sorted, the prefixes the client's connections hold besides those in own.
func (c *client) others(own []netip.Prefix) []netip.Prefix {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []netip.Prefix
	for p, n := range c.held {
		if slices.Contains(own, p) {
			n--
		}
		if n > 0 {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

// swap replaces a connection's prefixes old with now in the count.
func (c *client) swap(old, now []netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range now {
		c.held[p]++
	}
	for _, p := range old {
		if c.held[p]--; c.held[p] <= 0 {
			delete(c.held, p)
		}
	}
}

// holds returns the prefixes a connection occupies: its addresses as the prefixes they were
// handed out with, and its host routes; masked, without duplicates.
func holds(ipc *networkservice.IPContext) []netip.Prefix {
	var out []netip.Prefix
	keep := func(text string, hostOnly bool) {
		p, err := netip.ParsePrefix(text)
		if err != nil || hostOnly && !p.IsSingleIP() || slices.Contains(out, p.Masked()) {
			return
		}
		out = append(out, p.Masked())
	}
	for _, list := range [][]string{ipc.GetSrcIpAddrs(), ipc.GetDstIpAddrs()} {
		for _, text := range list {
			keep(text, false)
		}
	}
	for _, routes := range [][]*networkservice.Route{ipc.GetSrcRoutes(), ipc.GetDstRoutes()} {
		for _, r := range routes {
			keep(r.GetPrefix(), true)
		}
	}
	return out
}

// breach returns an address of ipc that lies in one of the prefixes added, if there is one.
func breach(ipc *networkservice.IPContext, added []netip.Prefix) (string, netip.Prefix, bool) {
	for _, list := range [][]string{ipc.GetSrcIpAddrs(), ipc.GetDstIpAddrs()} {
		for _, text := range list {
			a, err := netip.ParsePrefix(text)
			if err != nil {
				continue
			}
			for _, p := range added {
				if p.Contains(a.Addr()) {
					return text, p, true
				}
			}
		}
	}
	return "", netip.Prefix{}, false
}
