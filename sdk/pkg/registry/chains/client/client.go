// Package client is the registry client an endpoint or a forwarder uses to make itself known:
// it adds its id to the record's path, keeps the registration alive by refreshing it before it
// expires, and registers again as soon as the registry (or the nsmgr in front of it) comes back
// after a restart.
package client

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/common/connect"
	"vwire.dev/sdk/pkg/registry/common/heal"
	"vwire.dev/sdk/pkg/registry/common/refresh"
	"vwire.dev/sdk/pkg/registry/common/updatepath"
	"vwire.dev/sdk/pkg/registry/core/next"
)

// NewNSE returns an endpoint registry client named name, sending to cc; its background work
// ends with ctx.
func NewNSE(ctx context.Context, cc grpc.ClientConnInterface, name string) next.NSE {
	return next.Chain(
		updatepath.NewNSE(name),
		begin.NewNSE(), // one change per name at a time; refreshes and heal re-enter here
		heal.NewNSE(ctx),
		refresh.NewNSE(ctx), // after heal, so that a refresh that fails passes back through it
		connect.NewNSE(cc),
	)
}

// Register registers nse through cc and keeps it registered until ctx ends: refreshed before
// it expires, and registered again at once when the registry comes back after a restart, which
// a watch on the record's own name notices (the one goroutine this takes, for as long as ctx).
// It returns the record as registered and the function that unregisters it.
func Register(ctx context.Context, cc grpc.ClientConnInterface, nse *registry.NetworkServiceEndpoint) (*registry.NetworkServiceEndpoint, func(context.Context) error, error) {
	reg := NewNSE(ctx, cc, nse.GetName())
	registered, err := reg.Register(ctx, nse)
	if err != nil {
		return nil, nil, err
	}
	go func() {
		query := &next.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{Name: nse.GetName()}, Watch: true}
		_ = reg.Find(ctx, query, func(*next.Event[*registry.NetworkServiceEndpoint]) error { return nil })
	}()
	unregister := func(ctx context.Context) error { return reg.Unregister(ctx, registered) }
	return registered, unregister, nil
}
