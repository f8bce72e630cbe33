// Package client is the registry client an endpoint or a forwarder uses to make itself known:
// it adds its id to the record's path, keeps the registration alive by refreshing it before it
// expires, and registers again as soon as the registry (or the nsmgr in front of it) comes back
// after a restart. Register does all of it for one record; with WithTimeout its first
// registration also waits, for a bounded time, for a registry that is not up yet, so that
// components may start in any order.
//
// Who registers is proved by the token sent with every call (registry/common/authorize): the
// connection must carry the component's tokens as per-RPC credentials and, with an identity,
// mutual TLS: Dial(u, grpc.WithTransportCredentials(spiffe.ClientCredentials(src)),
// grpc.WithPerRPCCredentials(token.NewPerRPCCredentials(gen))), gen from spiffe.Tokens (or
// token.NewInsecure named after the component in a mesh without identities). A connection
// without tokens registers anonymously, which only an insecure registry accepts.
package client

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"vwire.dev/api/validate"
	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/common/connect"
	"vwire.dev/sdk/pkg/registry/common/heal"
	"vwire.dev/sdk/pkg/registry/common/refresh"
	"vwire.dev/sdk/pkg/registry/common/sendfd"
	"vwire.dev/sdk/pkg/registry/common/updatepath"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/hopurl"
	"vwire.dev/sdk/pkg/tools/telemetry"
	"vwire.dev/sdk/pkg/tools/token"
)

// Dial returns a connection to the registry (or the nsmgr in front of it) at u, unix:///path or
// tcp://host:port, that comes back quickly after a restart (100 ms, then 1.6 times longer up to a
// second), as heal expects; opts come after the defaults (insecure transport credentials that
// pass files over unix sockets, fdpass.Credentials; messages of at most
// validate.MaxMessageBytes), so grpc.WithTransportCredentials here
// replaces them (see the package comment for the credentials of a mesh with identities).
func Dial(u *url.URL, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	target, err := hopurl.Target(u)
	if err != nil {
		return nil, err
	}
	defaults := append([]grpc.DialOption{
		grpc.WithTransportCredentials(fdpass.Credentials(nil)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second,
		}}),
		grpc.WithDefaultCallOptions( // as the registry's server bounds them (grpcserve)
			grpc.MaxCallSendMsgSize(validate.MaxMessageBytes), grpc.MaxCallRecvMsgSize(validate.MaxMessageBytes)),
	}, fdpass.Interceptors()...) // for sendfd and recvfd: sockets passed by descriptor
	return grpc.NewClient(target, slices.Concat(defaults, telemetry.DialOptions(), opts)...) // the trace context, when traces are exported
}

// WithTokens sends the tokens of gen with every call on the connection (see the package
// comment): pass it to Dial.
func WithTokens(gen token.GeneratorFunc) grpc.DialOption {
	return grpc.WithPerRPCCredentials(token.NewPerRPCCredentials(gen))
}

// NewNS returns a network service registry client named name, sending to cc; its background
// work ends with ctx. Services do not expire, so there is no refresh. extra elements go just
// before connect.
func NewNS(ctx context.Context, cc grpc.ClientConnInterface, name string, extra ...next.NS) next.NS {
	elements := []next.NS{
		updatepath.NewNS(name),
		begin.NewNS(), // one change per name at a time; heal re-enters here
		heal.NewNS(ctx),
	}
	return next.Chain(append(append(elements, extra...), connect.NewNS(cc))...)
}

// NewNSE returns an endpoint registry client named name, sending to cc; its background work
// ends with ctx. extra elements go just before connect.
func NewNSE(ctx context.Context, cc grpc.ClientConnInterface, name string, extra ...next.NSE) next.NSE {
	elements := []next.NSE{
		updatepath.NewNSE(name),
		begin.NewNSE(), // one change per name at a time; refreshes and heal re-enter here
		heal.NewNSE(ctx),
		refresh.NewNSE(ctx), // after heal, so that a refresh that fails passes back through it
	}
	return next.Chain(append(append(elements, extra...), connect.NewNSE(cc))...)
}

// Option configures Register.
type Option func(*options)

type options struct {
	timeout    time.Duration
	passSocket bool
	nsExtra    []next.NS
	nseExtra   []next.NSE
	// Only for the constructors of NSM's shape (nsm.go):
	url  *url.URL
	dial []grpc.DialOption
	name string
}

// WithSocketPassed sends the endpoint's unix socket beside each Register and Unregister, named
// by its inode URL (registry/common/sendfd), as NSM's endpoints do: for an endpoint whose socket
// path its nsmgr and forwarder cannot see (a pod's). cc must be dialed with Dial (or with
// fdpass.Interceptors).
func WithSocketPassed() Option { return func(o *options) { o.passSocket = true } }

// WithTimeout lets the first registration wait up to d for the registry to answer: while it is
// unreachable (Unavailable: not started yet, or restarting), Register tries again, 50 ms after
// the first failure, then twice as long each time up to a second. Without it the first
// registration is one attempt, bounded by Register's ctx only.
func WithTimeout(d time.Duration) Option {
	if d <= 0 {
		panic("client.WithTimeout: the timeout must be positive")
	}
	return func(o *options) { o.timeout = d }
}

// Register registers nse through cc and keeps it registered until ctx ends or it is
// unregistered: refreshed before it expires, and registered again at once when the registry
// comes back after a restart, which a watch on the record's own name notices (the one goroutine
// this takes; Register returns once it stands). The first registration ends with ctx, and with
// WithTimeout's deadline; when it fails, nothing is left running, and an error after
// WithTimeout's deadline says so (Unavailable or DeadlineExceeded: the registry did not answer;
// the message names it). When ctx ends while the first registration is on its way, the registry
// may have taken it: Register unregisters the record before it returns (waiting at most
// undoTimeout), so that a program stopped while it registers leaves nothing registered.
// It returns the record as registered and the function that unregisters it, ends the
// background work and waits until it has ended.
func Register(ctx context.Context, cc grpc.ClientConnInterface, nse *registry.NetworkServiceEndpoint, opts ...Option) (*registry.NetworkServiceEndpoint, func(context.Context) error, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	extra := o.nseExtra
	if o.passSocket {
		extra = append(extra, sendfd.NewNSE())
	}
	chain := func(background context.Context) next.NSE { return NewNSE(background, cc, nse.GetName(), extra...) }
	// The query names the services too: an nsmgr keeps forwarders apart by their service.
	own := &registry.NetworkServiceEndpoint{Name: nse.GetName(), NetworkServiceNames: nse.GetNetworkServiceNames()}
	return keep(ctx, nse, own, chain, opts)
}

// RegisterNS is Register for a network service, which an endpoint registers before itself: it
// is registered again when the registry comes back after a restart, and has no refresh.
func RegisterNS(ctx context.Context, cc grpc.ClientConnInterface, ns *registry.NetworkService, opts ...Option) (*registry.NetworkService, func(context.Context) error, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	chain := func(background context.Context) next.NS { return NewNS(background, cc, ns.GetName(), o.nsExtra...) }
	return keep(ctx, ns, &registry.NetworkService{Name: ns.GetName()}, chain, opts)
}

// keep is Register for either record; own is the query for the record's own name, and chain
// makes the client chain whose background work ends with its context.
func keep[R next.Record](ctx context.Context, r, own R, chain func(context.Context) next.Element[R], opts []Option) (R, func(context.Context) error, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	background, stop := context.WithCancel(ctx)
	reg := chain(background)
	registered, err := first(ctx, reg, r, o.timeout)
	if err != nil {
		stop() // heal may have started to try again
		if ctx.Err() != nil {
			undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
			_ = chain(undo).Unregister(undo, r)
			cancel()
		}
		var zero R
		return zero, nil, err
	}
	// The watch stands once the registry sent the record back: a restart from then on is noticed.
	watching, watched := make(chan struct{}), make(chan struct{})
	var stands sync.Once
	go func() {
		defer close(watched)
		defer stands.Do(func() { close(watching) }) // the watch ended instead
		_ = reg.Find(background, &next.Query[R]{Record: own, Watch: true}, func(*next.Event[R]) error {
			stands.Do(func() { close(watching) })
			return nil
		})
	}()
	select {
	case <-watching:
	case <-ctx.Done():
	}
	unregister := func(ctx context.Context) error {
		err := reg.Unregister(ctx, registered)
		stop()
		<-watched
		return err
	}
	return registered, unregister, nil
}

// undoTimeout bounds the Unregister of a first registration the caller gave up on.
const undoTimeout = 5 * time.Second

// first is the first registration: one attempt, or attempts while the registry is unreachable
// until the timeout (when it is not zero).
func first[R next.Record](ctx context.Context, reg next.Element[R], r R, timeout time.Duration) (R, error) {
	var zero R
	if timeout == 0 {
		return reg.Register(ctx, r)
	}
	attempts, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	noAnswer := func(err error) error {
		if ctx.Err() != nil { // the caller gave up
			return fmt.Errorf("client: register %s: %w", r.GetName(), status.FromContextError(ctx.Err()).Err())
		}
		return fmt.Errorf("client: register %s: no answer within %s: %w", r.GetName(), timeout, err)
	}
	wait := 50 * time.Millisecond
	for {
		got, err := reg.Register(attempts, proto.Clone(r).(R))
		code := status.Code(err)
		switch {
		case err == nil:
			return got, nil
		case attempts.Err() != nil && (code == codes.Unavailable || code == codes.DeadlineExceeded):
			return zero, noAnswer(err)
		case code != codes.Unavailable:
			return zero, err
		}
		timer := time.NewTimer(wait)
		select {
		case <-attempts.Done():
			timer.Stop()
			return zero, noAnswer(err) // the last attempt's Unavailable names the registry
		case <-timer.C:
		}
		wait = min(2*wait, time.Second)
	}
}
