package main

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/api/nsurl"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/veth"
	connmonitor "vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/hopurl"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

// A client that died (a crash, a kill -9) left its connections open along the path, and its
// vWires in its namespace, whose alias names the connection as the forwarder that made them knows
// it. Restarted in the same namespace, it closes those connections along the path before asking
// anew: every hop frees what it held for them at once (the endpoint its addresses, the
// forwarders their interfaces and tunnels), rather than when the nsmgr notices that the caller
// went away (its NSM_ORPHAN_GRACE) or when the tokens expire. It learns each connection's path
// from its nsmgr's MonitorConnections, where it sees the connections its identity takes part
// in: a restarted client has the identity of its previous run (the same SVID files, the same
// pod). Then it removes whatever of those vWires is left.

// previous is a connection of a previous run, and the interface that is its vWire.
type previous struct {
	conn *networkservice.Connection
	url  *nsurl.URL // the service it was asked for, whose interface is its vWire
}

// closeLeftovers closes, through nsc, the connections of the vWires a previous run left under
// the names of services. Each failure is logged and leaves the cleanup to the nsmgr.
func closeLeftovers(ctx context.Context, c *config, services serviceURLs, id *spiffe.Identity, nsc networkservice.NetworkServiceClient) {
	logger := log.FromContext(ctx)
	aliases := vwireAliases(services)
	if len(aliases) == 0 {
		return
	}
	conns, err := monitored(ctx, c, id)
	if err != nil {
		logger.Warn("could not learn the connections a previous run left; the nsmgr closes them after NSM_ORPHAN_GRACE", "error", err)
		return
	}
	for _, p := range match(string(c.Name), aliases, conns) {
		// The Close passes the namespace as the Request did: the forwarder finds the vWire there.
		p.conn.Mechanism = request(p.url, nil).GetMechanismPreferences()[0]
		closing, cancel := context.WithTimeout(ctx, c.RequestTimeout)
		_, err := nsc.Close(closing, p.conn)
		cancel()
		if err != nil {
			logger.Warn("could not close the connection a previous run left; the nsmgr closes it after NSM_ORPHAN_GRACE",
				"interface", p.url.Interface, "id", p.conn.GetId(), "error", err)
			continue
		}
		logger.Info("closed the connection a previous run left", "interface", p.url.Interface, "id", p.conn.GetId())
	}
}

// vwireAliases returns the services whose interfaces are there already, by the interface's
// alias; an interface is a vWire only if a connection's path names it (match).
func vwireAliases(services serviceURLs) map[string]*nsurl.URL {
	aliases := map[string]*nsurl.URL{}
	for _, u := range services {
		if link, err := netlink.LinkByName(u.Interface); err == nil && link.Attrs().Alias != "" {
			aliases[link.Attrs().Alias] = u
		}
	}
	return aliases
}

// monitored returns the connections the client's identity sees at its nsmgr now.
func monitored(ctx context.Context, c *config, id *spiffe.Identity) ([]*networkservice.Connection, error) {
	target, err := hopurl.Target(c.ConnectTo.URL)
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient(target, append([]grpc.DialOption{grpc.WithTransportCredentials(fdpass.Credentials(nil))}, id.DialOptions()...)...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = cc.Close() }()
	asking, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	conns, err := connmonitor.Snapshot(asking, cc, &networkservice.MonitorScopeSelector{})
	if err != nil {
		return nil, err
	}
	return slices.Collect(maps.Values(conns)), nil
}

// match returns the connections among conns that one of the aliases names (the alias the
// forwarder gives the client's end of a vWire names its own path segment), started by the
// client called name, each ready for the client chain's Close: the client's segment and ID.
func match(name string, aliases map[string]*nsurl.URL, conns []*networkservice.Connection) []previous {
	var found []previous
	for _, conn := range conns {
		segments := conn.GetPath().GetPathSegments()
		if len(segments) == 0 || segments[0].GetName() != name {
			continue
		}
		for _, s := range segments {
			u, ok := aliases[veth.Alias(ifname.ID(s.GetId(), ifname.Client))]
			if !ok {
				continue
			}
			closing := conn.Clone()
			closing.Path.Index = 0
			closing.Id = segments[0].GetId()
			found = append(found, previous{conn: closing, url: u})
			break
		}
	}
	return found
}

// removeLeftovers removes the vWires a previous run of the client left in its namespace under
// the names it asks for. Without the right to (no CAP_NET_ADMIN) it says so and goes on: the
// forwarder then refuses the name, saying why.
func removeLeftovers(ctx context.Context, services serviceURLs) error {
	self, err := netns.Get()
	if err != nil {
		return fmt.Errorf("open this process's network namespace: %w", err)
	}
	defer func() { _ = self.Close() }()
	for _, u := range services {
		removed, err := veth.RemoveLeftover(self, u.Interface)
		switch {
		case status.Code(err) == codes.AlreadyExists:
			return fmt.Errorf("NSM_NETWORK_SERVICES: %s: %w", u, err)
		case err != nil:
			log.FromContext(ctx).Warn("could not check for a vWire a previous run left", "interface", u.Interface, "error", err)
		case removed:
			log.FromContext(ctx).Info("removed the vWire a previous run left", "interface", u.Interface)
		}
	}
	return nil
}
