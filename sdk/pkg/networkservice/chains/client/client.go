// Package client is the chain a Network Service Client uses: it keeps the path and its token,
// refreshes the connection before the next hop would time it out, heals it when the path under
// it breaks, retries a Request that failed for a reason that passes, and reaches the next hop
// over one shared gRPC connection per URL. The caller fills the request (network service,
// mechanism preferences, labels); WithAdditionalFunctionality adds elements that act on it
// just before it leaves (for example, a kernel interface for the returned mechanism).
//
// Files a mechanism names (the KERNEL mechanism's network namespace) travel as descriptors beside
// every Request and Close over a unix socket, as NSM's clients send them (sendfd, recvfd): a
// client names its own namespace by file:// path, the next hop sees an inode:// URL and gets the
// descriptor, and the client gets its file:// URL back. A component that uses the files of the
// next hop's answer (a forwarder, the endpoint's namespace) adds recvfd's client after the
// elements that use them.
package client

import (
	"context"
	"net/url"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/connect"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/heal"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/sendfd"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/metrics"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/common/refresh"
	"vwire.dev/sdk/pkg/networkservice/common/retry"
	"vwire.dev/sdk/pkg/networkservice/common/updatepath"
	"vwire.dev/sdk/pkg/networkservice/common/updatetoken"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/token"
)

// DefaultTokenLifetime is how long the client's tokens last unless WithTokenGenerator says else.
const DefaultTokenLifetime = 10 * time.Minute

// Option configures a client.
type Option func(*options)

type options struct {
	name         string
	url          *url.URL
	gen          token.GeneratorFunc
	heal         []heal.Option
	retry        []retry.Option
	dial         []dial.Option
	extra        []networkservice.NetworkServiceClient
	withoutHeal  bool
	withoutRetry bool
}

// WithName names the client: its path segment.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithClientURL sets the URL of the next hop, usually the node's Network Service Manager.
// Heal then tries that hop again when it cannot be reached, instead of reselecting
// (heal.WithFixedNextHop).
func WithClientURL(u *url.URL) Option { return func(o *options) { o.url = u } }

// WithTokenGenerator sets where the client's tokens come from; the default is
// token.NewInsecure(DefaultTokenLifetime) on the clock of NewClient's ctx, for meshes without
// identities.
func WithTokenGenerator(gen token.GeneratorFunc) Option { return func(o *options) { o.gen = gen } }

// WithHealOptions configures heal.
func WithHealOptions(opts ...heal.Option) Option { return func(o *options) { o.heal = opts } }

// WithoutHeal leaves heal out, for a component that heals by other means.
func WithoutHeal() Option { return func(o *options) { o.withoutHeal = true } }

// WithoutRetry leaves retry out: a component in the middle of a path (nsmgr, forwarder) answers
// its caller at once and lets the caller's retry and heal decide, instead of waiting while it
// holds the connection's turn.
func WithoutRetry() Option { return func(o *options) { o.withoutRetry = true } }

// WithRetryOptions configures retry.
func WithRetryOptions(opts ...retry.Option) Option { return func(o *options) { o.retry = opts } }

// WithDialOptions configures how the next hop is reached (TLS, timeouts).
func WithDialOptions(opts ...dial.Option) Option { return func(o *options) { o.dial = opts } }

// WithAdditionalFunctionality adds elements that run just before the request leaves.
func WithAdditionalFunctionality(elements ...networkservice.NetworkServiceClient) Option {
	return func(o *options) { o.extra = append(o.extra, elements...) }
}

// NewClient returns a client chain; its background work (refresh, heal, monitor streams, the
// shared gRPC connections) ends with ctx.
func NewClient(ctx context.Context, opts ...Option) networkservice.NetworkServiceClient {
	o := &options{name: "client"}
	for _, opt := range opts {
		opt(o)
	}
	if o.gen == nil {
		o.gen = token.NewInsecure(DefaultTokenLifetime, token.WithName(o.name), token.WithClock(clock.FromContext(ctx)))
	}
	perRPC := dial.WithDialOptions(grpc.WithPerRPCCredentials(token.NewPerRPCCredentials(o.gen)))
	none := next.NewNetworkServiceClient() // an optional slot left empty
	retrying, fixedURL, healing := none, none, none
	if !o.withoutRetry {
		retrying = retry.NewClient(o.retry...)
	}
	healOpts := o.heal
	if o.url != nil {
		fixedURL = clienturl.NewClient(o.url)
		// Reselecting cannot lead past a next hop that cannot be reached (the node's nsmgr,
		// restarting): try it again instead, keeping the path that may still carry traffic.
		healOpts = append([]heal.Option{heal.WithFixedNextHop()}, healOpts...)
	}
	if !o.withoutHeal {
		healing = heal.NewClient(ctx, healOpts...)
	}
	elements := []networkservice.NetworkServiceClient{
		retrying, // before begin: waiting between tries holds no connection's turn
		updatepath.NewClient(o.name),
		begin.NewClient(),         // one event per connection at a time; refresh and heal re-enter here
		metrics.NewClient(o.name), // after begin: refresh's and heal's Requests count too
		metadata.NewClient(),
		refresh.NewClient(ctx),
		fixedURL,
		healing,
	}
	elements = append(elements, o.extra...)
	elements = append(elements,
		sendfd.NewClient(), // files named in the request go beside it: the client's namespace
		updatetoken.NewClient(o.gen),
		dial.NewClient(ctx, append([]dial.Option{perRPC}, o.dial...)...),
		monitor.NewClient(ctx), // after dial: follows the next hop over the same connection
		connect.NewClient(),
	)
	return chain.NewNetworkServiceClient(elements...)
}
