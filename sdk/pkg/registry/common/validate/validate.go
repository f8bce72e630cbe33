// Package validate refuses a malformed registration before the registry acts on it, with an
// InvalidArgument status naming the field and what is wrong (vwire.dev/api/validate): a record
// without a name, an endpoint without a URL or with one that cannot be dialed, labels of a
// service the endpoint does not offer, anything over one of the bounds of vwire.dev/api/validate
// (the error names the constant), or a socket passed by descriptor (an inode:// URL): only the
// nsmgr the socket was handed to can dial it, so a registry's other clients never could (an
// nsmgr announces its node's endpoints with its own URL; it accepts such sockets itself,
// WithPassedSockets). Find is refused only for a template over api/validate.MaxRecordBytes, and
// Unregister passes: a query is a template, and removing is never refused for form. It belongs
// at the head of a registry server chain, and of an nsmgr's.
package validate

import (
	"context"
	"fmt"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/api/validate"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
)

// NewNS returns validate for network services.
func NewNS() next.NS {
	return &checker[*registry.NetworkService]{
		check: validate.NetworkService,
		query: func(ns *registry.NetworkService) error {
			return validate.NetworkServiceQuery(&registry.NetworkServiceQuery{NetworkService: ns})
		},
	}
}

// Option configures validate for endpoints.
type Option func(*endpointOptions)

type endpointOptions struct {
	passedSockets bool
}

// WithPassedSockets accepts endpoints that register a socket passed by descriptor (an
// inode:// URL): for an nsmgr, which receives the socket (registry/common/recvfd) and announces
// the endpoint with its own URL.
func WithPassedSockets() Option { return func(o *endpointOptions) { o.passedSockets = true } }

// NewNSE returns validate for network service endpoints.
func NewNSE(opts ...Option) next.NSE {
	var o endpointOptions
	for _, opt := range opts {
		opt(&o)
	}
	return &checker[*registry.NetworkServiceEndpoint]{
		check: func(nse *registry.NetworkServiceEndpoint) error { return endpoint(nse, o.passedSockets) },
		query: func(nse *registry.NetworkServiceEndpoint) error {
			return validate.NetworkServiceEndpointQuery(&registry.NetworkServiceEndpointQuery{NetworkServiceEndpoint: nse})
		},
	}
}

func endpoint(nse *registry.NetworkServiceEndpoint, passedSockets bool) error {
	if err := validate.NetworkServiceEndpoint(nse); err != nil {
		return err
	}
	if !passedSockets && fdpass.IsURL(nse.GetUrl()) {
		return status.Errorf(codes.InvalidArgument,
			"network_service_endpoint.url: endpoint %q registered a socket passed by descriptor (%s), which only the nsmgr it is handed to can dial; "+
				"register through the node's nsmgr, or register the socket's path", nse.GetName(), nse.GetUrl())
	}
	return nil
}

type checker[R next.Record] struct {
	check func(R) error // of a registration
	query func(R) error // of a Find's template, not nil
}

func (c *checker[R]) Register(ctx context.Context, r R) (R, error) {
	if err := c.check(r); err != nil {
		var zero R
		return zero, fmt.Errorf("validate: %w", err)
	}
	return next.Of[R](ctx).Register(ctx, r)
}

func (c *checker[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	if q.Record != nil { // a template of nothing matches everything
		if err := c.query(q.Record); err != nil {
			return fmt.Errorf("validate: %w", err)
		}
	}
	return next.Of[R](ctx).Find(ctx, q, send)
}

func (c *checker[R]) Unregister(ctx context.Context, r R) error {
	return next.Of[R](ctx).Unregister(ctx, r)
}
