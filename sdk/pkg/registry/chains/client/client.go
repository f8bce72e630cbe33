// Package client is the registry client an endpoint or a forwarder uses to make itself known:
// it adds its id to the record's path, keeps the registration alive by refreshing it before it
// expires, and registers again when the registry (or the nsmgr in front of it) comes back after
// a restart.
package client

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/common/refresh"
	"vwire.dev/sdk/pkg/registry/common/updatepath"
	"vwire.dev/sdk/pkg/registry/core/adapters"
	"vwire.dev/sdk/pkg/registry/core/next"
)

// NewNSE returns an endpoint registry client named name, sending to cc; its background work
// ends with ctx.
func NewNSE(ctx context.Context, cc grpc.ClientConnInterface, name string) next.NSE {
	return next.Chain(
		updatepath.NewNSE(name),
		begin.NewNSE(), // one change per name at a time; refreshes re-enter here
		refresh.NewNSE(ctx),
		adapters.NSEClient(registry.NewNetworkServiceEndpointRegistryClient(cc)),
	)
}
