// Package mechanismtranslation keeps a forwarder's two hops of a connection on their own
// mechanisms: the client chain, which reaches the next hop, must not send the mechanism the
// previous hop chose, and the server chain must get it back.
//
// Why: a forwarder's server chain negotiates a mechanism with the previous hop (the client's
// KERNEL, or the VXLAN tunnel from another node) and its client chain negotiates another with the
// next hop (the endpoint's KERNEL, or a tunnel to the endpoint's node). The request the client
// chain gets is a copy of the server's, with the server's mechanism and the previous hop's
// preferences in it; passed on as they are, the next hop would keep the previous hop's mechanism.
//
// Before next the element replaces the connection's mechanism by the one the next hop chose last
// time (kept in the client chain's metadata; none on a first Request, so that the next hop
// chooses) and clears the preferences, for the mechanism elements after it to offer their own.
// After next it keeps the next hop's mechanism and gives the connection the server's back. Close
// sends the next hop's mechanism. A first Request that fails keeps nothing (metadata drops it).
//
// Place: in a forwarder's client chain, before the mechanism elements that offer preferences
// (client.WithAdditionalFunctionality puts it after begin and metadata).
package mechanismtranslation

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

var nextHopKey = metadata.NewKey[*networkservice.Mechanism]("mechanismtranslation next hop")

// NewClient returns the element.
func NewClient() networkservice.NetworkServiceClient { return client{} }

type client struct{}

func (client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	m := metadata.Client(ctx)
	req = req.Clone()
	if req.GetConnection() == nil {
		req.Connection = &networkservice.Connection{}
	}
	previous := req.GetConnection().GetMechanism()
	req.Connection.Mechanism = nil
	if mech, ok := nextHopKey.Load(m); ok {
		req.Connection.Mechanism = mech.Clone()
	}
	req.MechanismPreferences = nil
	conn, err := next.Client(ctx).Request(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	nextHopKey.Store(m, conn.GetMechanism().Clone())
	conn = conn.Clone()
	conn.Mechanism = previous
	return conn, nil
}

func (client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	conn = conn.Clone()
	conn.Mechanism = nil
	if mech, ok := nextHopKey.LoadAndDelete(metadata.Client(ctx)); ok {
		conn.Mechanism = mech
	}
	return next.Client(ctx).Close(ctx, conn, opts...)
}
