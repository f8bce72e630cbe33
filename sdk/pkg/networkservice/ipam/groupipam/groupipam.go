// Package groupipam gives each connection a point-to-point link per group of prefixes, where an
// NSM author finds NSM's groupipam: NewServer([][]netip.Prefix{{10.0.0.0/24, fd00::/64},
// {172.16.0.0/24}}) gives every connection three links, one per group and family, each as
// point2pointipam gives one (its guarantees hold per link).
//
// It is point2pointipam.NewGroupServer under NSM's name. Differences from NSM's, on purpose:
// prefixes are netip.Prefix, not *net.IPNet; the groups share one element and one metadata
// entry, not a chain of independent IPAMs, so a failure after it releases every group's
// addresses together; groups whose prefixes overlap panic at construction instead of handing
// out one address twice; there is no WithCustomIPAMServer (strictipam takes an IPAM of one's
// own).
package groupipam

import (
	"net/netip"

	"github.com/networkservicemesh/api/pkg/api/networkservice"

	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
)

// NewServer returns the element handing out a link per group and family of groups.
func NewServer(groups [][]netip.Prefix) networkservice.NetworkServiceServer {
	return point2pointipam.NewGroupServer(groups)
}
