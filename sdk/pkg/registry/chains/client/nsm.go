package client

// The constructors of NSM's shape: a chain that dials its registry itself and takes its options,
// for code written against NSM's registry client. New code dials once with Dial and builds
// chains with NewNSE and NewNS, or registers with Register, on that connection.

import (
	"context"
	"net/url"
	"os"
	"path/filepath"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/core/next"
)

// WithClientURL is the registry, or the nsmgr in front of it, that
// NewNetworkServiceEndpointRegistryClient and NewNetworkServiceRegistryClient dial.
func WithClientURL(u *url.URL) Option { return func(o *options) { o.url = u } }

// WithDialOptions are those constructors' options of Dial (transport credentials, WithTokens).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

// WithName is the id those constructors' chains add to records' path_ids; by default the
// program's name.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithNSEAdditionalFunctionality puts elements just before connect in the endpoint chain of
// Register and of NewNetworkServiceEndpointRegistryClient (clientinfo-like labels, a check of
// one's own).
func WithNSEAdditionalFunctionality(extra ...next.NSE) Option {
	return func(o *options) { o.nseExtra = append(o.nseExtra, extra...) }
}

// WithNSAdditionalFunctionality is WithNSEAdditionalFunctionality for network services
// (RegisterNS, NewNetworkServiceRegistryClient).
func WithNSAdditionalFunctionality(extra ...next.NS) Option {
	return func(o *options) { o.nsExtra = append(o.nsExtra, extra...) }
}

// NewNetworkServiceEndpointRegistryClient is NewNSE on a connection of its own to WithClientURL,
// closed when ctx ends. A URL Dial refuses makes every call fail with InvalidArgument naming it.
func NewNetworkServiceEndpointRegistryClient(ctx context.Context, opts ...Option) next.NSE {
	o, cc, err := dialFor(ctx, opts)
	if err != nil {
		return failing[*registry.NetworkServiceEndpoint]{err}
	}
	return NewNSE(ctx, cc, o.name, o.nseExtra...)
}

// NewNetworkServiceRegistryClient is NewNS on a connection of its own to WithClientURL, as
// NewNetworkServiceEndpointRegistryClient.
func NewNetworkServiceRegistryClient(ctx context.Context, opts ...Option) next.NS {
	o, cc, err := dialFor(ctx, opts)
	if err != nil {
		return failing[*registry.NetworkService]{err}
	}
	return NewNS(ctx, cc, o.name, o.nsExtra...)
}

func dialFor(ctx context.Context, opts []Option) (*options, *grpc.ClientConn, error) {
	o := &options{name: filepath.Base(os.Args[0])}
	for _, opt := range opts {
		opt(o)
	}
	if o.url == nil {
		return nil, nil, status.Error(codes.InvalidArgument, "client: no registry to dial; give WithClientURL the nsmgr's or registry's URL")
	}
	cc, err := Dial(o.url, o.dial...)
	if err != nil {
		return nil, nil, status.Errorf(codes.InvalidArgument, "client: WithClientURL(%s): %v", o.url, err)
	}
	context.AfterFunc(ctx, func() { _ = cc.Close() })
	return o, cc, nil
}

// failing is a chain whose every call fails with err: NSM's constructors have no error.
type failing[R next.Record] struct{ err error }

func (f failing[R]) Register(context.Context, R) (R, error) {
	var zero R
	return zero, f.err
}

func (f failing[R]) Find(context.Context, *next.Query[R], func(*next.Event[R]) error) error {
	return f.err
}

func (f failing[R]) Unregister(context.Context, R) error { return f.err }
