// Package connect ends a registry chain by sending every Register, Find and Unregister to a
// remote registry over a gRPC connection the caller made.
//
// Errors keep their gRPC codes: the remote registry's answers come back as it gave them, and a
// registry that cannot be reached answers Unavailable with the connection's target in the
// message, so the person reading it knows which registry was down. Connect does not dial,
// redial or pick the registry: the grpc.ClientConn does (give it a short reconnect backoff,
// such as grpc.WithConnectParams with a BaseDelay of 100 ms, so that heal finds a restarted
// registry quickly); registry/core/adapters does the translation.
//
// Connect is the last element of a registry client chain, and of a server chain that passes
// records on to another registry (a proxy).
package connect

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/core/adapters"
	"vwire.dev/sdk/pkg/registry/core/next"
)

// NewNS returns connect for network services, sending over cc.
func NewNS(cc grpc.ClientConnInterface) next.NS {
	return newConnect(adapters.NSClient(registry.NewNetworkServiceRegistryClient(check(cc))), cc)
}

// NewNSE returns connect for network service endpoints, sending over cc.
func NewNSE(cc grpc.ClientConnInterface) next.NSE {
	return newConnect(adapters.NSEClient(registry.NewNetworkServiceEndpointRegistryClient(check(cc))), cc)
}

func check(cc grpc.ClientConnInterface) grpc.ClientConnInterface {
	if cc == nil {
		panic("connect: the client connection is nil")
	}
	return cc
}

type connect[R next.Record] struct {
	remote next.Element[R]
	target string
}

func newConnect[R next.Record](remote next.Element[R], cc grpc.ClientConnInterface) *connect[R] {
	target := "the registry"
	if t, ok := cc.(interface{ Target() string }); ok {
		target = "the registry at " + t.Target()
	}
	return &connect[R]{remote: remote, target: target}
}

// explain names the target in an Unavailable error; others pass as they are.
func (c *connect[R]) explain(err error) error {
	if s, ok := status.FromError(err); ok && s.Code() == codes.Unavailable {
		return status.Errorf(codes.Unavailable, "connect: %s is unreachable: %s", c.target, s.Message())
	}
	return err
}

func (c *connect[R]) Register(ctx context.Context, r R) (R, error) {
	got, err := c.remote.Register(ctx, r)
	return got, c.explain(err)
}

func (c *connect[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	var sendErr error // the caller's own error goes back to it as it was
	err := c.remote.Find(ctx, q, func(ev *next.Event[R]) error {
		sendErr = send(ev)
		return sendErr
	})
	if sendErr != nil {
		return sendErr
	}
	return c.explain(err)
}

func (c *connect[R]) Unregister(ctx context.Context, r R) error {
	return c.explain(c.remote.Unregister(ctx, r))
}
