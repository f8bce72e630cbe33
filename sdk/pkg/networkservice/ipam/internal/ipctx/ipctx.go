// Package ipctx is what the IPAM elements (point2pointipam, singlepointipam) share: the course
// of a Request (Run) and of a Close, and the reading and editing of the IP context, so that both
// parse the request the same way, give the same errors (a field that does not parse is an
// InvalidArgument naming it) and release addresses by the same rules.
package ipctx

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/ippool"
)

// Grant is an address taken from a pool.
type Grant struct {
	Pool *ippool.Pool
	Addr netip.Addr
}

// Release gives the grants back to their pools.
func Release(grants []Grant) {
	for _, g := range grants {
		if g.Pool != nil {
			g.Pool.Release(g.Addr)
		}
	}
}

// Change is what an IPAM decided for one family of a connection.
type Change[S any] struct {
	Held  S       // what the connection holds in the family from now on
	Taken []Grant // taken by this Request: released if it fails
	Freed []Grant // held before and given up: released once the Request went through
}

// Decide works out one family (by index) of a connection that held held before (the zero S on
// a first Request), writes it into ipc, and returns the change. On error it leaves nothing
// taken and need not restore ipc.
type Decide[S any] func(family int, in Input, ipc *networkservice.IPContext, held S) (Change[S], error)

// Run is an IPAM's Request: it parses the IP context, decides each of families in turn, and
// calls the rest of the chain. If that succeeds, the connection's state is stored under key and
// what it gave up is released; if anything fails, what this Request took is released and the IP
// context is put back as it came, so the connection keeps what it held.
func Run[S any](ctx context.Context, req *networkservice.NetworkServiceRequest, elem string, key *metadata.Key[[]S], families int, decide Decide[S]) (*networkservice.Connection, error) {
	ipc := Of(req.GetConnection())
	in, err := Parse(elem, ipc)
	if err != nil {
		return nil, err
	}
	m := metadata.Server(ctx)
	before, _ := key.Load(m)
	saved := save(ipc)

	after := make([]S, families)
	var taken, freed []Grant
	for i := range families {
		var held S
		if i < len(before) {
			held = before[i]
		}
		change, err := decide(i, in, ipc, held)
		if err != nil {
			Release(taken)
			saved.restore(ipc)
			return nil, err
		}
		after[i] = change.Held
		taken = append(taken, change.Taken...)
		freed = append(freed, change.Freed...)
	}

	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		Release(taken)
		saved.restore(ipc)
		return nil, err
	}
	Release(freed)
	key.Store(m, after)
	return conn, nil
}

// Close is an IPAM's Close: it releases what the connection holds, by grants, then calls the
// rest of the chain.
func Close[S any](ctx context.Context, conn *networkservice.Connection, key *metadata.Key[[]S], grants func(family int, held S) []Grant) (*emptypb.Empty, error) {
	if held, ok := key.LoadAndDelete(metadata.Server(ctx)); ok {
		for i, h := range held {
			Release(grants(i, h))
		}
	}
	return next.Server(ctx).Close(ctx, conn)
}

// Field is the path of the IP context in a request, as error messages name it.
const Field = "connection.context.ip_context"

// Of returns the connection's IP context, making it and the context above it if missing.
func Of(conn *networkservice.Connection) *networkservice.IPContext {
	if conn.GetContext() == nil {
		conn.Context = &networkservice.ConnectionContext{}
	}
	if conn.GetContext().GetIpContext() == nil {
		conn.Context.IpContext = &networkservice.IPContext{}
	}
	return conn.GetContext().GetIpContext()
}

// Input is what an IPAM reads from the IP context: every list parsed.
type Input struct {
	Src, Dst []netip.Prefix // src_ip_addrs, dst_ip_addrs
	Excluded []netip.Prefix // excluded_prefixes
}

// Parse reads the addresses and excluded prefixes of ipc; elem names the element in errors.
func Parse(elem string, ipc *networkservice.IPContext) (Input, error) {
	var r Input
	var err error
	if r.Src, err = parseList(elem, "src_ip_addrs", ipc.GetSrcIpAddrs()); err != nil {
		return r, err
	}
	if r.Dst, err = parseList(elem, "dst_ip_addrs", ipc.GetDstIpAddrs()); err != nil {
		return r, err
	}
	r.Excluded, err = parseList(elem, "excluded_prefixes", ipc.GetExcludedPrefixes())
	return r, err
}

func parseList(elem, name string, list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, len(list))
	for i, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %s.%s[%d]: %q is not an address with a prefix length (CIDR) such as 10.0.0.1/32 or fd00::1/128; fix or drop it",
				elem, Field, name, i, s)
		}
		out[i] = p
	}
	return out, nil
}

// IsExcluded reports whether a lies in one of the request's excluded prefixes.
func (r Input) IsExcluded(a netip.Addr) bool {
	for _, e := range r.Excluded {
		if e.Contains(a) {
			return true
		}
	}
	return false
}

// Want is the address of a list the pool is asked for, with its index in the list; Index is -1
// when the list has none of the pool's family that is not another pool's (First).
type Want struct {
	Addr  netip.Addr
	Index int
}

// First returns the first entry of list in pool or, when none is, the first in its family that
// none of others (the IPAM's other pools) holds. An IPAM with several pools of a family
// (point2pointipam's groups) so finds each pool's address, and an address another pool holds is
// that pool's to keep, not one this pool refuses.
func First(list []netip.Prefix, pool *ippool.Pool, others ...*ippool.Pool) Want {
	want := Want{Index: -1}
	for i, p := range list {
		a := p.Addr().WithZone("")
		switch {
		case pool.Contains(a):
			return Want{Addr: a, Index: i}
		case want.Index < 0 && a.Is4() == pool.Is4() && !slices.ContainsFunc(others, func(o *ippool.Pool) bool { return o.Contains(a) }):
			want = Want{Addr: a, Index: i}
		}
	}
	return want
}

// Required is the FailedPrecondition for an address the client requires (src_ip_required,
// dst_ip_required) that the element cannot hand out; why says what stands in the way.
func Required(elem, name string, want Want, list []string, why string) error {
	return status.Errorf(codes.FailedPrecondition, "%s: %s.%s[%d] %s is required (%s_required) but cannot be kept: %s; ask for another address or drop the requirement",
		elem, Field, name, want.Index, list[want.Index], strings.TrimSuffix(name, "_addrs"), why)
}

// Family names the family of pool in messages.
func Family(pool *ippool.Pool) string {
	if pool.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// Exhausted is the ResourceExhausted for a pool that has no room for the request.
func Exhausted(elem, what string, pools []*ippool.Pool, excluded int) error {
	cidrs := make([]string, len(pools))
	for i, p := range pools {
		cidrs[i] = p.String()
	}
	reason := ""
	if excluded > 0 {
		reason = fmt.Sprintf(" outside the %d excluded prefixes of the request", excluded)
	}
	return status.Errorf(codes.ResourceExhausted, "%s: no free %s %s left in %s%s; close unused connections or configure a larger prefix",
		elem, Family(pools[0]), what, strings.Join(cidrs, ", "), reason)
}

// saved is a copy of the lists an IPAM edits, to put back when the Request fails.
type saved struct {
	src, dst             []string
	srcRoutes, dstRoutes []*networkservice.Route
}

func save(ipc *networkservice.IPContext) saved {
	return saved{
		src: slices.Clone(ipc.GetSrcIpAddrs()), dst: slices.Clone(ipc.GetDstIpAddrs()),
		srcRoutes: slices.Clone(ipc.GetSrcRoutes()), dstRoutes: slices.Clone(ipc.GetDstRoutes()),
	}
}

func (s saved) restore(ipc *networkservice.IPContext) {
	ipc.SrcIpAddrs, ipc.DstIpAddrs, ipc.SrcRoutes, ipc.DstRoutes = s.src, s.dst, s.srcRoutes, s.dstRoutes
}

// SetAddr returns list holding want once, in place of every entry that owned reports true for
// (the element's earlier grants, which want replaces); other entries stay as they are.
func SetAddr(list []string, want netip.Prefix, owned func(netip.Prefix) bool) []string {
	text := want.String()
	out := list[:0]
	done := false
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		switch {
		case s == text && !done:
			done = true
		case err == nil && owned(p):
			continue
		}
		out = append(out, s)
	}
	if !done {
		out = append(out, text)
	}
	return out
}

// SetRoute is SetAddr for routes: it keeps one route to want and drops the others that owned
// reports true for.
func SetRoute(routes []*networkservice.Route, want netip.Prefix, owned func(netip.Prefix) bool) []*networkservice.Route {
	text := want.String()
	out := routes[:0]
	done := false
	for _, r := range routes {
		p, err := netip.ParsePrefix(r.GetPrefix())
		switch {
		case r.GetPrefix() == text && !done:
			done = true
		case err == nil && owned(p):
			continue
		}
		out = append(out, r)
	}
	if !done {
		out = append(out, &networkservice.Route{Prefix: text})
	}
	return out
}
