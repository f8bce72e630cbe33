// Package singlepointipam gives each connection one address in a subnet that the endpoint
// shares with all its clients (an L2 service, a VLAN, a bridge): the client's own address, and
// the endpoint's address in that subnet, both with the subnet's prefix length.
//
// Before the rest of the chain runs, it writes into connection.context.ip_context, per
// configured family:
//   - src_ip_addrs: the client's address, e.g. 172.16.0.5/24;
//   - dst_ip_addrs: the endpoint's own address in the subnet, the same for every connection:
//     the first usable address of the prefix (172.16.0.1/24), set aside when the element is made.
//
// No routes: the subnet is on-link on both sides.
//
// With several prefixes of a family, a connection gets an address in the first one that has a
// free address and whose endpoint address the request does not exclude.
//
// Guarantees (the same as point2pointipam's):
//   - Addresses come from a pool per prefix shared by every connection (ippool): never the
//     network or IPv4 broadcast address, never an address in the request's excluded_prefixes.
//   - A refresh keeps the connection's address; if the request now excludes it, or the
//     endpoint's address of its subnet, the connection moves, and the old address is released
//     once the rest of the chain accepted the move.
//   - A request that carries an address of a prefix (a client back after the endpoint restarted)
//     gets it again when it is free and not excluded. With src_ip_required set, an address that
//     cannot be kept fails with FailedPrecondition; with dst_ip_required set, so does a
//     destination other than the endpoint's address.
//   - Close releases the address; so does a failure of the rest of the chain on the first
//     Request, and the IP context is put back as it came. A failed refresh keeps the old address.
//   - No room is ResourceExhausted naming the CIDRs; a field that does not parse is
//     InvalidArgument naming it.
//
// Place: after metadata and after the elements that add excluded prefixes (excludedprefixes);
// before the elements that configure interfaces from the IP context.
package singlepointipam

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/ipam/internal/ipctx"
	"vwire.dev/sdk/pkg/tools/ippool"
)

const name = "singlepointipam"

// subnet is one configured prefix: its pool and the endpoint's own address in it.
type subnet struct {
	prefix netip.Prefix
	pool   *ippool.Pool
	own    netip.Addr
}

// seat is a connection's address in one family; sub is nil when it has none.
type seat struct {
	sub  *subnet
	addr netip.Addr
}

// seatsKey holds a connection's seats, one per family of the server, in its order.
var seatsKey = metadata.NewKey[[]seat](name)

type server struct {
	families [][]*subnet // IPv4 first, each family's prefixes in the order given
}

// NewServer returns the element handing out addresses in prefixes: IPv4, IPv6 or both. The
// prefixes come from the program, so one that is invalid, has no room for a client (/32,
// /128) or overlaps another panics, naming it.
func NewServer(prefixes ...netip.Prefix) networkservice.NetworkServiceServer {
	if len(prefixes) == 0 {
		panic("singlepointipam: NewServer needs at least one prefix")
	}
	var v4, v6 []*subnet
	for i, p := range prefixes {
		if !p.IsValid() {
			panic(fmt.Sprintf("singlepointipam: prefix %d is not a valid CIDR", i))
		}
		if p.IsSingleIP() {
			panic(fmt.Sprintf("singlepointipam: %v has room for the endpoint only; give a /31 (IPv4), a /127 (IPv6) or a shorter prefix", p))
		}
		for _, q := range prefixes[:i] {
			if p.Overlaps(q) {
				panic(fmt.Sprintf("singlepointipam: %v and %v overlap", q, p))
			}
		}
		pool, err := ippool.New(p)
		if err != nil {
			panic("singlepointipam: " + err.Error())
		}
		own, err := pool.Allocate()
		if err != nil {
			panic("singlepointipam: " + err.Error())
		}
		sub := &subnet{prefix: p.Masked(), pool: pool, own: own}
		if p.Addr().Is4() {
			v4 = append(v4, sub)
		} else {
			v6 = append(v6, sub)
		}
	}
	s := &server{}
	for _, family := range [][]*subnet{v4, v6} {
		if len(family) > 0 {
			s.families = append(s.families, family)
		}
	}
	return s
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return ipctx.Run(ctx, req, name, seatsKey, len(s.families), s.decide)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return ipctx.Close(ctx, conn, seatsKey, func(_ int, st seat) []ipctx.Grant { return []ipctx.Grant{st.grant()} })
}

// grant is the seat as an address of its subnet's pool.
func (st seat) grant() ipctx.Grant {
	if st.sub == nil {
		return ipctx.Grant{}
	}
	return ipctx.Grant{Pool: st.sub.pool, Addr: st.addr}
}

// decide works out the seat of the connection in family i.
func (s *server) decide(i int, in ipctx.Input, ipc *networkservice.IPContext, cur seat) (ipctx.Change[seat], error) {
	family := s.families[i]
	st, took, err := choose(family, in, ipc, cur)
	if err != nil {
		return ipctx.Change[seat]{}, err
	}
	change := ipctx.Change[seat]{Held: st}
	if took {
		change.Taken = []ipctx.Grant{st.grant()}
	}
	if cur.sub != nil && cur != st {
		change.Freed = []ipctx.Grant{cur.grant()}
	}
	write(ipc, family, st)
	return change, nil
}

// choose decides the connection's seat in one family: the address the request carries if it may
// have it, else the one it holds if it may stay, else a new one. took reports that the seat was
// taken from a pool just now (and must be released if the request fails).
func choose(family []*subnet, in ipctx.Input, ipc *networkservice.IPContext, cur seat) (st seat, took bool, err error) {
	fits := func(st seat) bool { return !in.IsExcluded(st.addr) && !in.IsExcluded(st.sub.own) }
	want := ipctx.First(in.Src, family[0].pool)
	decided := false
	if want.Index >= 0 {
		var why string
		switch {
		case cur.sub != nil && want.Addr == cur.addr && fits(cur):
			st, decided = cur, true
		case cur.sub != nil && want.Addr == cur.addr:
			why = "it or the endpoint's address of its subnet is in the request's excluded_prefixes"
		default:
			st, why = take(family, in, want.Addr)
			decided, took = why == "", why == ""
		}
		if !decided && ipc.GetSrcIpRequired() {
			return seat{}, false, ipctx.Required(name, "src_ip_addrs", want, ipc.GetSrcIpAddrs(), why)
		}
	}
	if !decided && cur.sub != nil && fits(cur) {
		st, decided = cur, true
	}
	if !decided {
		if st, err = allocate(family, in); err != nil {
			return seat{}, false, err
		}
		took = true
	}
	if dst := ipctx.First(in.Dst, family[0].pool); dst.Index >= 0 && dst.Addr != st.sub.own && ipc.GetDstIpRequired() {
		why := fmt.Sprintf("the endpoint's address in %v is %v", st.sub.prefix, st.sub.own)
		if took {
			st.sub.pool.Release(st.addr)
		}
		return seat{}, false, ipctx.Required(name, "dst_ip_addrs", dst, ipc.GetDstIpAddrs(), why)
	}
	return st, took, nil
}

// take takes the address a client asks for; why says what stands in the way, if anything.
func take(family []*subnet, in ipctx.Input, a netip.Addr) (seat, string) {
	for _, sub := range family {
		if !sub.prefix.Contains(a) {
			continue
		}
		if in.IsExcluded(sub.own) {
			return seat{}, fmt.Sprintf("the endpoint's address %v of its subnet is in the request's excluded_prefixes", sub.own)
		}
		if err := sub.pool.Take(a, in.Excluded...); err != nil {
			return seat{}, err.Error()
		}
		return seat{sub: sub, addr: a}, ""
	}
	return seat{}, "it is outside the endpoint's prefixes"
}

// allocate takes the lowest free address of the first subnet that fits the request.
func allocate(family []*subnet, in ipctx.Input) (seat, error) {
	pools := make([]*ippool.Pool, len(family))
	for i, sub := range family {
		pools[i] = sub.pool
		if in.IsExcluded(sub.own) {
			continue
		}
		if a, err := sub.pool.Allocate(in.Excluded...); err == nil {
			return seat{sub: sub, addr: a}, nil
		}
	}
	return seat{}, ipctx.Exhausted(name, "address", pools, len(in.Excluded))
}

// write puts the seat into the IP context, in place of the family's addresses the request
// carried.
func write(ipc *networkservice.IPContext, family []*subnet, st seat) {
	ours := func(p netip.Prefix) bool {
		for _, sub := range family {
			if sub.prefix.Contains(p.Addr()) {
				return true
			}
		}
		return false
	}
	bits := st.sub.prefix.Bits()
	ipc.SrcIpAddrs = ipctx.SetAddr(ipc.GetSrcIpAddrs(), netip.PrefixFrom(st.addr, bits), ours)
	ipc.DstIpAddrs = ipctx.SetAddr(ipc.GetDstIpAddrs(), netip.PrefixFrom(st.sub.own, bits), ours)
}
