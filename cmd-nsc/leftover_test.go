package main

import (
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"

	"vwire.dev/api/nsurl"
	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/veth"
)

// TestMatchFindsThePreviousRunsConnections: the connection whose forwarder segment the alias
// of a vWire names, started by this client, is the one to close, as its first hop would: index
// 0, its own ID; another client's, or one no alias names, is left alone.
func TestMatchFindsThePreviousRunsConnections(t *testing.T) {
	conn := func(id, client, fwd string) *networkservice.Connection {
		return &networkservice.Connection{Id: "m-" + id, Path: &networkservice.Path{Index: 1, PathSegments: []*networkservice.PathSegment{
			{Name: client, Id: "c-" + id}, {Name: "nsmgr-1", Id: "m-" + id}, {Name: "fwd-1", Id: fwd}, {Name: "nse-1", Id: "e-" + id},
		}}}
	}
	u, err := nsurl.Parse("kernel://icmp-responder/nsm-1")
	require.NoError(t, err)
	aliases := map[string]*nsurl.URL{veth.Alias(ifname.ID("f-1", ifname.Client)): u}
	found := match("nsc", aliases, []*networkservice.Connection{
		conn("1", "nsc", "f-1"),
		conn("2", "nsc", "f-2"),   // a live connection of another vWire
		conn("3", "other", "f-1"), // not this client's
	})
	require.Len(t, found, 1)
	require.Equal(t, "c-1", found[0].conn.GetId())
	require.Zero(t, found[0].conn.GetPath().GetIndex())
	require.Equal(t, "nsm-1", found[0].url.Interface)
}
