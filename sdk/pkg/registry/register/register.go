// Package register is how a program that serves an endpoint (or a forwarder) makes itself known
// and stays known: Start registers it (and, first, its network services) through the node's
// nsmgr or a registry and keeps it registered; Serve is the program's whole life around its
// chain: serve, register, wait for the signal, unregister, stop serving. Every cmd that serves an
// endpoint lives this way, and an NSE author's program is Serve and the chain it serves.
//
// Start keeps the record registered with the sdk's registry client (registry/chains/client):
// refreshed before it expires, and registered again as soon as an nsmgr or registry that
// restarted answers, until the program stops. Its first registration waits (WithTimeout, 15 s
// by default) for a registry that is not up yet, so that components may start in any order.
//
// Guarantees:
//   - Serve unregisters before it stops serving, so that no client is sent to a program that no
//     longer answers, and it returns once serving has ended (no call still running, the socket
//     file removed: grpcserve.Serve). The chain's background work gets a context that outlives
//     the signal until then.
//   - Stop unregisters the endpoint, waiting at most the timeout, even after the program's
//     context ended; the network services stay registered (other endpoints may provide them).
//     The refresh and heal of both end with it.
//   - Errors are for the person who runs the program (sdk/pkg/tools/explain): what failed, at
//     which URL, the gRPC code and message, and when nothing answered, the timeout by the name of
//     its setting and what to check. A program stopped while it registers leaves nothing
//     registered and Serve returns nil.
package register

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/tools/explain"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/hopurl"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

// DefaultTimeout bounds the first registration and the unregistration without WithTimeout (the
// default of the cmds' NSM_REGISTER_TIMEOUT).
const DefaultTimeout = 15 * time.Second

// Option configures Start and Serve.
type Option func(*options)

type options struct {
	dial       []grpc.DialOption
	server     []grpc.ServerOption
	services   bool
	payload    string
	timeout    explain.Limit
	socketPath bool
}

// WithIdentity is the program's identity on both sides (spiffe.Config's Load): mutual TLS for its
// server and for its connection to the nsmgr or registry (none when insecure), and tokens from
// gen on every registration. It is WithDialOptions and WithServerOptions of id, with gen's tokens.
func WithIdentity(id *spiffe.Identity, gen token.GeneratorFunc) Option {
	return func(o *options) {
		WithDialOptions(append(id.DialOptions(), regclient.WithTokens(gen))...)(o)
		WithServerOptions(id.ServerOptions()...)(o)
	}
}

// WithDialOptions configure the connection to the nsmgr or registry (regclient.Dial): the
// program's transport credentials and its tokens (regclient.WithTokens), which every
// registration carries.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

// WithServerOptions configure Serve's server (its transport credentials).
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return func(o *options) { o.server = append(o.server, opts...) }
}

// WithServices registers the endpoint's network services (its NetworkServiceNames) before the
// endpoint, with payload (payload.IP, payload.Ethernet, or "" for the registry's default), each
// kept registered (and registered again after a registry restart) until Stop, which leaves them
// registered: other endpoints may provide them.
func WithServices(payload string) Option {
	return func(o *options) { o.services, o.payload = true, payload }
}

// WithTimeout bounds how long the first registration waits for the nsmgr or registry to answer,
// and the unregistration at Stop; setting is its name for the person who set it
// (NSM_REGISTER_TIMEOUT), told in the error when nothing answered within it, or "".
func WithTimeout(d time.Duration, setting string) Option {
	if d <= 0 {
		panic("register.WithTimeout: the timeout must be positive")
	}
	return func(o *options) { o.timeout = explain.Limit{Setting: setting, Value: d} }
}

// WithSocketPath registers the endpoint's unix socket by its path only. By default, when the
// endpoint's URL and the nsmgr's are both unix sockets, the socket is passed beside the
// registration as a descriptor (regclient.WithSocketPassed), as NSM's endpoints do, so that the
// nsmgr and forwarder reach it from any mount namespace (a pod's); a registry reached directly
// takes no descriptor.
func WithSocketPath() Option { return func(o *options) { o.socketPath = true } }

func collect(opts []Option) *options {
	o := &options{timeout: explain.Limit{Value: DefaultTimeout}}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// Registration is an endpoint kept registered, from Start until Stop.
type Registration struct {
	ctx        context.Context
	record     *registry.NetworkServiceEndpoint
	at         string
	limit      explain.Limit
	unregister func(context.Context) error
	cc         *grpc.ClientConn
	background context.CancelFunc
}

// Start registers nse (its Url set) at connectTo, after its network services with WithServices,
// and keeps it registered until Stop or until ctx ends.
func Start(ctx context.Context, connectTo *url.URL, nse *registry.NetworkServiceEndpoint, opts ...Option) (*Registration, error) {
	o := collect(opts)
	cc, err := regclient.Dial(connectTo, o.dial...)
	if err != nil {
		return nil, fmt.Errorf("register: connect to %s: %w", connectTo, err)
	}
	r, err := start(ctx, cc, connectTo, nse, o)
	if err != nil {
		_ = cc.Close()
		return nil, err
	}
	r.cc = cc
	return r, nil
}

func start(ctx context.Context, cc *grpc.ClientConn, connectTo *url.URL, nse *registry.NetworkServiceEndpoint, o *options) (*Registration, error) {
	// The services' refresh and heal end at Stop, which does not unregister them.
	background, stop := context.WithCancel(ctx)
	r := &Registration{ctx: ctx, at: connectTo.String(), limit: o.timeout, background: stop}
	var services []string
	if o.services {
		services = nse.GetNetworkServiceNames()
	}
	for _, name := range services {
		ns := &registry.NetworkService{Name: name, Payload: o.payload}
		if _, _, err := regclient.RegisterNS(background, cc, ns, regclient.WithTimeout(o.timeout.Value)); err != nil {
			stop()
			return nil, r.explain("register network service "+name, err, explain.NoAnswer(err))
		}
	}
	clientOpts := []regclient.Option{regclient.WithTimeout(o.timeout.Value)}
	if u, err := url.Parse(nse.GetUrl()); err == nil && u.Scheme == hopurl.Unix && connectTo.Scheme == hopurl.Unix && !o.socketPath {
		clientOpts = append(clientOpts, regclient.WithSocketPassed())
	}
	got, unregister, err := regclient.Register(ctx, cc, nse, clientOpts...)
	if err != nil {
		stop()
		return nil, r.explain("register", err, explain.NoAnswer(err))
	}
	r.record, r.unregister = got, unregister
	log.FromContext(ctx).Info("registered", "name", got.GetName(), "services", got.GetNetworkServiceNames(), "at", r.at,
		"expires", got.GetExpirationTime().AsTime().Format(time.RFC3339))
	return r, nil
}

// Record is the endpoint as the registry took it (its expiration time, its URL as an nsmgr
// rewrote it).
func (r *Registration) Record() *registry.NetworkServiceEndpoint { return r.record }

// Stop unregisters the endpoint, waiting at most the timeout (with the values of Start's
// context, even once it ended), ends the background work, and closes the connection Start made.
// It is called once.
func (r *Registration) Stop() error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), r.limit.Value)
	defer cancel()
	err := r.unregister(ctx)
	r.background()
	if r.cc != nil {
		_ = r.cc.Close()
	}
	if err != nil {
		return r.explain("unregister", err, ctx.Err() != nil)
	}
	return nil
}

// explain tells what failed at the nsmgr or registry, and whether the time ran out.
func (r *Registration) explain(what string, err error, timedOut bool) error {
	return &explain.Error{What: what + " at " + r.at, TimedOut: timedOut, Limit: r.limit,
		Check: "is the nsmgr or registry running there?", Err: err}
}

// Builder makes what Serve serves: an endpoint or a forwarder chain whose background work ends
// with serving, which outlives the program's context until the program is unregistered; cc is
// the connection to the nsmgr or registry, for a chain that looks endpoints up there.
type Builder func(serving context.Context, cc grpc.ClientConnInterface) (grpcserve.Registrar, error)

// Serve is a registered program's life: it serves what build makes on listenOn (nil: a socket in
// a new temporary folder, removed at the end), registers nse there with Start (its Url is
// listenOn), and when ctx ends (a signal), or serving fails, unregisters, then stops serving.
// It returns once serving has ended, with the error that ended it, if any, joined with the
// unregistration's. A registration that fails is the error, and stops serving.
func Serve(ctx context.Context, listenOn, connectTo *url.URL, nse *registry.NetworkServiceEndpoint, build Builder, opts ...Option) error {
	o := collect(opts)
	if listenOn == nil {
		dir, err := os.MkdirTemp("", "vw")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(dir) }()
		listenOn = &url.URL{Scheme: hopurl.Unix, Path: filepath.Join(dir, "endpoint.sock")}
	}
	cc, err := regclient.Dial(connectTo, o.dial...)
	if err != nil {
		return fmt.Errorf("register: connect to %s: %w", connectTo, err)
	}
	defer func() { _ = cc.Close() }()
	serving, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	served, err := build(serving, cc)
	if err != nil {
		return err
	}
	errs, err := grpcserve.Serve(serving, listenOn, served, o.server...)
	if err != nil {
		return err
	}
	log.FromContext(ctx).Info("serving", "url", listenOn.String())
	record := proto.Clone(nse).(*registry.NetworkServiceEndpoint)
	record.Url = listenOn.String()
	return grpcserve.Registered(ctx, errs, stopServing, func() (func() error, error) {
		r, err := start(ctx, cc, connectTo, record, o)
		if err != nil {
			return nil, err
		}
		return r.Stop, nil
	})
}
