// Package point2pointipam gives each connection a point-to-point link: per configured family, a
// pair of host addresses, the client's end (src) and the endpoint's end (dst), with a route from
// each end to the other.
//
// Before the rest of the chain runs, it writes into connection.context.ip_context:
//   - src_ip_addrs: the client's address, dst_ip_addrs: the endpoint's, each a /32 or /128
//     (10.0.0.2/32 and 10.0.0.1/32 for the first connection on 10.0.0.0/24);
//   - src_routes: a route to the endpoint's address, dst_routes: a route to the client's.
//
// An endpoint given an IPv4 and an IPv6 prefix gives every connection both links (dual stack).
//
// Guarantees:
//   - Addresses come from one pool per family shared by every connection of the element
//     (ippool): the lowest free pair, never a network or broadcast address, never an address in
//     the request's excluded_prefixes.
//   - A refresh keeps the connection's addresses. If the request now excludes one of them, that
//     end gets a new one and the old one is released once the rest of the chain accepted it.
//   - A request that carries addresses of the pool (a client reconnecting after the endpoint
//     restarted) gets them back when they are free and not excluded. With src_ip_required or
//     dst_ip_required set, an address the client carries that cannot be kept fails the request
//     with FailedPrecondition instead of being replaced.
//   - Close releases the connection's addresses. When the rest of the chain fails, the addresses
//     this Request allocated are released and the IP context is put back as it came: a first
//     Request leaves nothing behind, a failed refresh leaves the connection its old addresses.
//   - A full pool is ResourceExhausted naming its CIDRs; an address or excluded prefix that does
//     not parse is InvalidArgument naming the field.
//
// Place: after metadata (the connection's addresses live in its metadata) and after the
// elements that add excluded prefixes (excludedprefixes); before the elements that configure
// interfaces and routes from the IP context.
package point2pointipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/ipam/internal/ipctx"
	"vwire.dev/sdk/pkg/tools/ippool"
)

const name = "point2pointipam"

// link is one family's pair of a connection; zero when the connection has none.
type link struct{ src, dst netip.Addr }

// linksKey holds a connection's links, one per pool of the server, in the pools' order.
var linksKey = metadata.NewKey[[]link](name)

type server struct {
	pools  []*ippool.Pool   // one per group and family, IPv4 first in each group
	others [][]*ippool.Pool // for each pool, every other: an address of theirs is theirs to keep
}

// NewServer returns the element handing out links from prefixes: IPv4, IPv6 or both; several of
// a family make one pool. The prefixes come from the program, so one that is invalid, or two
// that overlap, panic, naming it; a component that reads prefixes from its configuration checks
// them first (ippool.New returns the same complaints as errors).
func NewServer(prefixes ...netip.Prefix) networkservice.NetworkServiceServer {
	return NewGroupServer([][]netip.Prefix{prefixes})
}

// NewGroupServer returns the element handing out a link per group of prefixes and family (NSM's
// groupipam): a connection of groups {10.0.0.0/24, fd00::/64} and {172.16.0.0/24} gets three
// links. Each group is what NewServer takes; prefixes of different groups must not overlap
// either (a panic names them).
func NewGroupServer(groups [][]netip.Prefix) networkservice.NetworkServiceServer {
	if len(groups) == 0 {
		panic("point2pointipam: NewServer needs at least one prefix")
	}
	s := &server{}
	var all [2][]netip.Prefix // every group's, per family: to refuse overlaps across groups
	for g, prefixes := range groups {
		group := "" // named only where there are several
		if len(groups) > 1 {
			group = fmt.Sprintf(" of group %d", g)
		}
		if len(prefixes) == 0 {
			panic("point2pointipam: NewServer needs at least one prefix" + group)
		}
		var v4, v6 []netip.Prefix
		for i, p := range prefixes {
			switch {
			case !p.IsValid():
				panic(fmt.Sprintf("point2pointipam: prefix %d%s is not a valid CIDR", i, group))
			case p.Addr().Is4():
				v4 = append(v4, p)
			default:
				v6 = append(v6, p)
			}
		}
		for f, family := range [][]netip.Prefix{v4, v6} {
			if len(family) == 0 {
				continue
			}
			pool, err := ippool.New(family...)
			if err != nil {
				panic("point2pointipam: " + err.Error())
			}
			all[f] = append(all[f], family...)
			if _, err := ippool.New(all[f]...); err != nil {
				panic(fmt.Sprintf("point2pointipam: prefixes%s: %v", group, err))
			}
			s.pools = append(s.pools, pool)
		}
	}
	for i := range s.pools {
		s.others = append(s.others, slices.Delete(slices.Clone(s.pools), i, i+1))
	}
	return s
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return ipctx.Run(ctx, req, name, linksKey, len(s.pools), s.decide)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return ipctx.Close(ctx, conn, linksKey, func(i int, l link) []ipctx.Grant {
		return []ipctx.Grant{{Pool: s.pools[i], Addr: l.src}, {Pool: s.pools[i], Addr: l.dst}}
	})
}

// decide works out the link of the connection in the family of pool i.
func (s *server) decide(i int, in ipctx.Input, ipc *networkservice.IPContext, cur link) (ipctx.Change[link], error) {
	pool := s.pools[i]
	l, taken, err := pair(pool, s.others[i], in, ipc, cur)
	if err != nil {
		ipctx.Release(taken)
		return ipctx.Change[link]{}, err
	}
	change := ipctx.Change[link]{Held: l, Taken: taken}
	for _, old := range []netip.Addr{cur.src, cur.dst} {
		if old.IsValid() && old != l.src && old != l.dst {
			change.Freed = append(change.Freed, ipctx.Grant{Pool: pool, Addr: old})
		}
	}
	write(ipc, pool, l)
	return change, nil
}

// pair decides the connection's pair in pool: the addresses it asks for or holds where they may
// stay, new ones for the rest; addresses of the other pools are left to them. It returns what it
// took from the pool, also on error.
func pair(pool *ippool.Pool, others []*ippool.Pool, in ipctx.Input, ipc *networkservice.IPContext, cur link) (link, []ipctx.Grant, error) {
	var taken []ipctx.Grant
	src, took, err := keep(pool, others, in, end{"src_ip_addrs", in.Src, ipc.GetSrcIpAddrs(), ipc.GetSrcIpRequired()}, cur.src)
	if took {
		taken = append(taken, ipctx.Grant{Pool: pool, Addr: src})
	}
	if err != nil {
		return link{}, taken, err
	}
	dst, took, err := keep(pool, others, in, end{"dst_ip_addrs", in.Dst, ipc.GetDstIpAddrs(), ipc.GetDstIpRequired()}, cur.dst)
	if took {
		taken = append(taken, ipctx.Grant{Pool: pool, Addr: dst})
	}
	if err != nil {
		return link{}, taken, err
	}
	switch {
	case !src.IsValid() && !dst.IsValid():
		dst, src, err = pool.AllocatePair(in.Excluded...)
		if err == nil {
			taken = append(taken, ipctx.Grant{Pool: pool, Addr: dst}, ipctx.Grant{Pool: pool, Addr: src})
		}
	case !src.IsValid():
		if src, err = pool.Allocate(in.Excluded...); err == nil {
			taken = append(taken, ipctx.Grant{Pool: pool, Addr: src})
		}
	case !dst.IsValid():
		if dst, err = pool.Allocate(in.Excluded...); err == nil {
			taken = append(taken, ipctx.Grant{Pool: pool, Addr: dst})
		}
	}
	if err != nil {
		what := "address"
		if !src.IsValid() && !dst.IsValid() {
			what = "address pair"
		}
		return link{}, taken, ipctx.Exhausted(name, what, []*ippool.Pool{pool}, len(in.Excluded))
	}
	return link{src: src, dst: dst}, taken, nil
}

// end is one side of the link as the request describes it.
type end struct {
	field    string         // src_ip_addrs or dst_ip_addrs
	addrs    []netip.Prefix // the field parsed
	texts    []string       // the field as sent
	required bool           // src_ip_required or dst_ip_required
}

// keep returns the address this end may keep: the one the request carries if the connection
// holds it or it is free, else the one the connection holds if it is not excluded now, else the
// zero Addr (a new one is needed). took reports that it was taken from the pool just now.
func keep(pool *ippool.Pool, others []*ippool.Pool, in ipctx.Input, e end, cur netip.Addr) (addr netip.Addr, took bool, err error) {
	want := ipctx.First(e.addrs, pool, others...)
	if want.Index >= 0 {
		switch {
		case want.Addr == cur && !in.IsExcluded(cur):
			return cur, false, nil
		case want.Addr == cur:
			if e.required {
				return netip.Addr{}, false, ipctx.Required(name, e.field, want, e.texts, "it is in the request's excluded_prefixes")
			}
		default:
			err := pool.Take(want.Addr, in.Excluded...)
			if err == nil {
				return want.Addr, true, nil
			}
			if e.required {
				return netip.Addr{}, false, ipctx.Required(name, e.field, want, e.texts, err.Error())
			}
		}
	}
	if cur.IsValid() && !in.IsExcluded(cur) {
		return cur, false, nil
	}
	return netip.Addr{}, false, nil
}

// write puts the link into the IP context, in place of the pool's addresses and host routes the
// request carried.
func write(ipc *networkservice.IPContext, pool *ippool.Pool, l link) {
	src, dst := netip.PrefixFrom(l.src, l.src.BitLen()), netip.PrefixFrom(l.dst, l.dst.BitLen())
	inPool := func(p netip.Prefix) bool { return pool.Contains(p.Addr()) }
	hostInPool := func(p netip.Prefix) bool { return p.IsSingleIP() && pool.Contains(p.Addr()) }
	ipc.SrcIpAddrs = ipctx.SetAddr(ipc.GetSrcIpAddrs(), src, inPool)
	ipc.DstIpAddrs = ipctx.SetAddr(ipc.GetDstIpAddrs(), dst, inPool)
	ipc.SrcRoutes = ipctx.SetRoute(ipc.GetSrcRoutes(), dst, hostInPool)
	ipc.DstRoutes = ipctx.SetRoute(ipc.GetDstRoutes(), src, hostInPool)
}
