// Package validate rejects a malformed Request before any element acts on it, with an
// InvalidArgument status that names the field and what is wrong (vwire.dev/api/validate).
//
// It checks form, not time: expired tokens are authorize's and timeout's business. Close is never
// refused for its form, so a component can always clean up what it holds, only for a
// connection over the bounds of vwire.dev/api/validate (its ID, labels, path: the error names
// the constant), which no Request accepted. It belongs right after updatepath, which gives a
// connection without an ID this hop's ID.
package validate

import (
	"context"
	"fmt"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/api/validate"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// NewServer returns the validating element.
func NewServer() networkservice.NetworkServiceServer { return server{} }

type server struct{}

func (server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if err := validate.Request(req); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return next.Server(ctx).Request(ctx, req)
}

func (server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if err := validate.ConnectionLimits(conn); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return next.Server(ctx).Close(ctx, conn)
}
