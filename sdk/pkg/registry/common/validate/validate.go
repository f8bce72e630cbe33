// Package validate refuses a malformed registration before the registry acts on it, with an
// InvalidArgument status naming the field and what is wrong (vwire.dev/api/validate): a record
// without a name, an endpoint URL that cannot be dialed, labels of a service the endpoint does
// not offer. Find and Unregister pass: a query is a template, and removing is never refused for
// form. It belongs at the head of a registry server chain.
package validate

import (
	"context"
	"fmt"

	"github.com/networkservicemesh/api/pkg/api/registry"

	"vwire.dev/api/validate"
	"vwire.dev/sdk/pkg/registry/core/next"
)

// NewNS returns validate for network services.
func NewNS() next.NS { return &checker[*registry.NetworkService]{check: validate.NetworkService} }

// NewNSE returns validate for network service endpoints.
func NewNSE() next.NSE {
	return &checker[*registry.NetworkServiceEndpoint]{check: validate.NetworkServiceEndpoint}
}

type checker[R next.Record] struct {
	check func(R) error
}

func (c *checker[R]) Register(ctx context.Context, r R) (R, error) {
	if err := c.check(r); err != nil {
		var zero R
		return zero, fmt.Errorf("validate: %w", err)
	}
	return next.Of[R](ctx).Register(ctx, r)
}

func (c *checker[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	return next.Of[R](ctx).Find(ctx, q, send)
}

func (c *checker[R]) Unregister(ctx context.Context, r R) error {
	return next.Of[R](ctx).Unregister(ctx, r)
}
