// Package sandbox builds in-process meshes for tests: a registry, and nodes each with a Network
// Service Manager and pass-through forwarders, endpoints and clients, every one a real gRPC server
// on a unix socket in a temporary folder. A test kills and restarts any component to watch the
// mesh heal. Everything stops, and the folder goes, when the test ends.
//
// A domain is secure as a deployment is: it has a trust domain of its own (TrustDomain), every
// component an SVID of it (spiffe://sandbox.vwire/<name>, issued anew at each start), and every
// hop speaks mutual TLS, signs its tokens with its SVID and authorizes with its identity
// (authorize.WithIdentity, on both APIs). Insecure builds a domain without identities, to compare.
package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/chains/nsmgr"
	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/common/connect"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/discover"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/common/roundrobin"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/registry/chains/registryserver"
	regauthorize "vwire.dev/sdk/pkg/registry/common/authorize"
	"vwire.dev/sdk/pkg/registry/common/expire"
	"vwire.dev/sdk/pkg/registry/common/querycache"
	regrecvfd "vwire.dev/sdk/pkg/registry/common/recvfd"
	"vwire.dev/sdk/pkg/registry/core/adapters"
	regnext "vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

// TokenLifetime is how long the sandbox's tokens last.
const TokenLifetime = time.Minute

// RegistrationLifetime is how long a registration lasts without a refresh: long against
// TokenLifetime, so that a test moving a fake clock through token lifetimes, faster than
// refreshes can follow, does not expire registrations behind its back.
const RegistrationLifetime = 10 * TokenLifetime

// Domain is one mesh: a registry and its nodes.
type Domain struct {
	t        testing.TB
	ctx      context.Context
	dir      string
	Registry *Component
	Nodes    []*Node
	clock    clock.Clock
	ca       *spiffe.CA // nil: insecure

	insecure bool

	mu         sync.Mutex
	components []*Component
}

// Node is one node of a Domain.
type Node struct {
	domain     *Domain
	Name       string
	NSMgr      *Component
	Forwarders []*Component
}

// Option configures a Domain.
type Option func(*Domain)

// WithClock runs the whole domain, its tokens included, on c (a clock.Fake, say).
func WithClock(c clock.Clock) Option { return func(d *Domain) { d.clock = c } }

// Insecure builds the domain without identities: plain gRPC, unsigned tokens, no checks of who
// signed what.
func Insecure() Option { return func(d *Domain) { d.insecure = true } }

// TrustDomain is the trust domain of a secure sandbox.
var TrustDomain = spiffeid.RequireTrustDomainFromString("sandbox.vwire")

// Operator is the identity (Dial's "operator") that sees every connection through the
// MonitorConnections of nsmgrs and endpoints.
var Operator = spiffeid.RequireFromSegments(TrustDomain, "operator")

// svidLifetime is how long the sandbox's SVIDs last: longer than a test (TLS checks them against
// the real clock, whatever the domain's clock).
const svidLifetime = 24 * time.Hour

// New builds a domain of n nodes, each with an nsmgr and one forwarder, ready when it returns.
func New(t testing.TB, n int, opts ...Option) *Domain {
	t.Helper()
	dir, err := os.MkdirTemp("", "vw")
	if err != nil {
		t.Fatal(err)
	}
	d := &Domain{t: t, dir: dir, clock: clock.Real{}}
	for _, opt := range opts {
		opt(d)
	}
	if !d.insecure {
		if d.ca, err = spiffe.NewCA(TrustDomain); err != nil {
			t.Fatal(err)
		}
	}
	logs := &testLog{t: t}
	ctx, cancel := context.WithCancel(log.WithLogger(clock.WithClock(context.Background(), d.clock), slog.New(slog.NewTextHandler(logs, nil))))
	d.ctx = ctx
	t.Cleanup(func() {
		defer logs.stop()
		cancel()
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, c := range d.components {
			c.Kill()
		}
		_ = os.RemoveAll(dir)
	})
	d.Registry = d.start("registry", func(_ context.Context, _ *url.URL, id *Identity) (*served, error) {
		opts := []registryserver.Option{registryserver.WithExpireOptions(expire.WithDefaultLifetime(RegistrationLifetime))}
		if id.Source != nil {
			opts = append(opts, registryserver.WithAuthorizeOptions(regauthorize.WithIdentity(id.Source)))
		}
		return &served{registrar: registryserver.New(opts...)}, nil
	})
	for i := range n {
		node := &Node{domain: d, Name: fmt.Sprintf("node-%d", i)}
		node.NSMgr = d.start(node.Name+"-nsmgr", func(ctx context.Context, self *url.URL, id *Identity) (*served, error) {
			cc, err := d.dial(ctx, d.Registry.URL, id)
			if err != nil {
				return nil, err
			}
			name := node.Name + "-nsmgr"
			opts := []nsmgr.Option{nsmgr.WithName(name), nsmgr.WithURL(self), nsmgr.WithRegistry(cc),
				nsmgr.WithDialOptions(dial.WithDialOptions(id.DialOptions()...))}
			if id.Source != nil {
				opts = append(opts, nsmgr.WithAuthorizeOptions(authorize.WithIdentity(id.Source)),
					nsmgr.WithRegistryAuthorizeOptions(regauthorize.WithIdentity(id.Source)),
					nsmgr.WithMonitorOptions(monitor.WithOperators(Operator)))
			}
			return &served{registrar: nsmgr.NewServer(ctx, id.Tokens, opts...)}, nil
		})
		node.NewForwarder(node.Name + "-fwd-0")
		d.Nodes = append(d.Nodes, node)
	}
	return d
}

// Identity is a component's identity in the domain: its SVID source (nil when insecure) and its
// tokens. A test that builds a component of its own (a real forwarder) gives it one
// (NewIdentity) to take part in the domain.
type Identity struct {
	Source spiffe.Source
	Tokens token.GeneratorFunc
}

// NewIdentity issues an identity for name: spiffe://sandbox.vwire/<name>, or none (tokens only)
// in an insecure domain.
func (d *Domain) NewIdentity(name string) *Identity {
	d.t.Helper()
	id, err := d.identity(name)
	if err != nil {
		d.t.Fatal(err)
	}
	return id
}

func (d *Domain) identity(name string) (*Identity, error) {
	if d.ca == nil {
		return &Identity{Tokens: token.NewInsecure(TokenLifetime, token.WithName(name), token.WithClock(d.clock))}, nil
	}
	id, err := spiffeid.FromSegments(TrustDomain, name)
	if err != nil {
		return nil, err
	}
	src, err := d.ca.Source(id, svidLifetime)
	if err != nil {
		return nil, err
	}
	gen, err := spiffe.Tokens(src, TokenLifetime, token.WithClock(d.clock))
	if err != nil {
		return nil, err
	}
	return &Identity{Source: src, Tokens: gen}, nil
}

// DialOptions are the identity's clients' transport credentials: mutual TLS, or none.
func (id *Identity) DialOptions() []grpc.DialOption {
	if id.Source == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(spiffe.ClientCredentials(id.Source))}
}

// RegistryDialOptions are DialOptions and the identity's tokens sent with every call, for a
// connection a registry client uses (sdk/pkg/registry/chains/client).
func (id *Identity) RegistryDialOptions() []grpc.DialOption {
	return append(id.DialOptions(), regclient.WithTokens(id.Tokens))
}

// ServerOptions are the identity's server's transport credentials: mutual TLS, or none.
func (id *Identity) ServerOptions() []grpc.ServerOption {
	if id.Source == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(spiffe.ServerCredentials(id.Source))}
}

// dial returns a connection to u as id, its tokens sent with every call (the registry's calls
// need them; the networkservice client chain adds its own), closed when ctx ends.
func (d *Domain) dial(ctx context.Context, u *url.URL, id *Identity) (*grpc.ClientConn, error) {
	cc, err := regclient.Dial(u, id.RegistryDialOptions()...)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { _ = cc.Close() })
	return cc, nil
}

// Dial returns a connection to u (a component's URL) as the client named as, with an identity
// of its own and its tokens sent with every call, closed when the test ends: for a test that calls
// a component's API itself, an attacker's calls included.
func (d *Domain) Dial(u *url.URL, as string) *grpc.ClientConn {
	d.t.Helper()
	cc, err := d.dial(d.ctx, u, d.NewIdentity(as))
	if err != nil {
		d.t.Fatal(err)
	}
	return cc
}

// test is the identity of the test itself, when it calls the domain's registry.
func (d *Domain) test() *Identity { return d.NewIdentity("test") }

// RegisterService registers a network service in the domain's registry.
func (d *Domain) RegisterService(ns *registry.NetworkService) {
	d.t.Helper()
	d.services("register", ns, func(ctx context.Context, c registry.NetworkServiceRegistryClient) error {
		_, err := c.Register(ctx, ns)
		return err
	})
}

// UnregisterService removes a network service from the domain's registry.
func (d *Domain) UnregisterService(ns *registry.NetworkService) {
	d.t.Helper()
	d.services("unregister", ns, func(ctx context.Context, c registry.NetworkServiceRegistryClient) error {
		_, err := c.Unregister(ctx, ns)
		return err
	})
}

// services calls the registry's network service API, failing the test on an error.
func (d *Domain) services(verb string, ns *registry.NetworkService, call func(context.Context, registry.NetworkServiceRegistryClient) error) {
	d.t.Helper()
	ctx, cancel := context.WithCancel(d.ctx)
	defer cancel()
	cc, err := d.dial(ctx, d.Registry.URL, d.test())
	if err != nil {
		d.t.Fatal(err)
	}
	if err := call(ctx, registry.NewNetworkServiceRegistryClient(cc)); err != nil {
		d.t.Fatalf("sandbox: %s service %s: %v", verb, ns.GetName(), err)
	}
}

// NewForwarder starts a pass-through forwarder on the node, registered with its nsmgr under
// labels (nil: {p2p: true}).
func (n *Node) NewForwarder(name string, labels ...map[string]string) *Component {
	l := map[string]string{"p2p": "true"}
	if len(labels) > 0 {
		l = labels[0]
	}
	d := n.domain
	c := d.start(name, func(ctx context.Context, self *url.URL, id *Identity) (*served, error) {
		cc, err := d.dial(ctx, n.NSMgr.URL, id)
		if err != nil {
			return nil, err
		}
		var opts []endpoint.Option
		if id.Source != nil {
			opts = append(opts, endpoint.WithAuthorizeOptions(authorize.WithIdentity(id.Source)))
		}
		fwd := PassThroughForwarder(ctx, name, id.Tokens, cc, id.DialOptions(), opts...)
		return &served{registrar: fwd, announce: n.announce(ctx, cc, ForwarderRecord(name, self, l))}, nil
	})
	n.Forwarders = append(n.Forwarders, c)
	return c
}

// PassThroughForwarder returns the forwarder of the sandbox's nodes, for any test that needs one
// without a data plane: the standard endpoint chain, then discovery of the endpoint a Request
// names through the registry services of the node's nsmgr at cc (services and endpoints cached,
// as the nsmgr caches them), and the Request passed on to it unchanged. Its tokens come from gen; its
// background work ends with ctx. Endpoints that registered with their socket passed by
// descriptor are reached through the socket that comes with the lookup's result, when cc was
// dialed with regclient.Dial (as the kernel forwarder reaches them). It dials endpoints with
// dialOpts (its transport credentials); opts configure its endpoint chain (authorization).
func PassThroughForwarder(ctx context.Context, name string, gen token.GeneratorFunc, cc grpc.ClientConnInterface, dialOpts []grpc.DialOption, opts ...endpoint.Option) endpoint.Endpoint {
	// Every Request looks its service and endpoint up (Close its endpoint): answered from
	// memory, kept current by a watch.
	sockets := fdpass.NewSockets()
	ns := regnext.Chain(querycache.NewNS(ctx), adapters.NSClient(registry.NewNetworkServiceRegistryClient(cc)))
	nse := regnext.Chain(querycache.NewNSE(ctx), regrecvfd.NewClient(sockets), adapters.NSEClient(registry.NewNetworkServiceEndpointRegistryClient(cc)))
	return endpoint.NewServer(ctx, gen, append([]endpoint.Option{
		endpoint.WithName(name),
		endpoint.WithAdditionalFunctionality(
			discover.NewServer(ns, nse),
			roundrobin.NewServer(),
			connect.NewServer(client.NewClient(ctx, client.WithName(name), client.WithTokenGenerator(gen), client.WithoutRetry(),
				client.WithDialOptions(dial.WithSockets(sockets), dial.WithDialOptions(dialOpts...)))),
		)}, opts...)...)
}

// ForwarderRecord is the registration of a forwarder named name, reached at u, with labels
// (matched by a network service's match metadata) for the service "forwarder" that an nsmgr
// keeps for its node.
func ForwarderRecord(name string, u *url.URL, labels map[string]string) *registry.NetworkServiceEndpoint {
	return &registry.NetworkServiceEndpoint{
		Name:                 name,
		NetworkServiceNames:  []string{"forwarder"},
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"forwarder": {Labels: labels}},
		Url:                  u.String(),
	}
}

// NewEndpoint starts an endpoint on the node, registered through its nsmgr, with elements after
// the standard endpoint chain.
func (n *Node) NewEndpoint(nse *registry.NetworkServiceEndpoint, elements ...networkservice.NetworkServiceServer) *Component {
	d := n.domain
	return d.start(nse.GetName(), func(ctx context.Context, self *url.URL, id *Identity) (*served, error) {
		cc, err := d.dial(ctx, n.NSMgr.URL, id)
		if err != nil {
			return nil, err
		}
		opts := []endpoint.Option{endpoint.WithName(nse.GetName()), endpoint.WithAdditionalFunctionality(elements...)}
		if id.Source != nil {
			opts = append(opts, endpoint.WithAuthorizeOptions(authorize.WithIdentity(id.Source)),
				endpoint.WithMonitorOptions(monitor.WithOperators(Operator)))
		}
		ep := endpoint.NewServer(ctx, id.Tokens, opts...)
		reg := nse.Clone()
		reg.Url = self.String()
		return &served{registrar: ep, announce: n.announce(ctx, cc, reg)}, nil
	})
}

// Context returns a context for calls into the domain: it carries the domain's clock and logger
// and ends with the test.
func (d *Domain) Context() context.Context { return d.ctx }

// NewClient returns a client chain connected to the node's nsmgr, with an identity of its own;
// it stops with the test.
func (n *Node) NewClient(name string, opts ...client.Option) networkservice.NetworkServiceClient {
	n.domain.t.Helper()
	id := n.domain.NewIdentity(name)
	opts = append([]client.Option{client.WithName(name), client.WithClientURL(n.NSMgr.URL), client.WithTokenGenerator(id.Tokens),
		client.WithDialOptions(dial.WithDialOptions(id.DialOptions()...))}, opts...)
	return client.NewClient(n.domain.ctx, opts...)
}

// announce returns the registration of nse through the node's nsmgr, kept alive (refreshed, and
// healed after an nsmgr restart) until ctx ends, when it is dropped without an Unregister, as a
// crashed process would; Stop unregisters first.
func (n *Node) announce(ctx context.Context, cc grpc.ClientConnInterface, nse *registry.NetworkServiceEndpoint) func(*Component) error {
	return func(c *Component) error {
		_, unregister, err := regclient.Register(ctx, cc, nse)
		if err == nil {
			c.unregister = func() { _ = unregister(context.WithoutCancel(ctx)) }
		}
		return err
	}
}

// served is what a component serves, and how it makes itself known once it serves.
type served struct {
	registrar grpcserve.Registrar
	announce  func(*Component) error // nil: nothing to announce
}

// testLog writes the mesh's log lines into the test's log, shown when it fails or with -v, until
// the test ends.
type testLog struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
}

// Component is one running server of the sandbox, which the test can kill and restart.
type Component struct {
	Name  string
	URL   *url.URL
	d     *Domain
	build func(ctx context.Context, self *url.URL, id *Identity) (*served, error)

	mu          sync.Mutex
	cancel      context.CancelFunc
	stopServing context.CancelFunc
	done        <-chan error
	unregister  func() // set once the component announced itself
}

// Stop ends the component as a well-behaved program does: it unregisters, then stops.
func (c *Component) Stop() {
	c.mu.Lock()
	unregister := c.unregister
	c.unregister = nil
	c.mu.Unlock()
	if unregister != nil {
		unregister()
	}
	c.Kill()
}

func (d *Domain) start(name string, build func(ctx context.Context, self *url.URL, id *Identity) (*served, error)) *Component {
	d.t.Helper()
	c := &Component{Name: name, URL: &url.URL{Scheme: "unix", Path: filepath.Join(d.dir, name+".sock")}, d: d, build: build}
	c.Restart()
	d.mu.Lock()
	d.components = append(d.components, c)
	d.mu.Unlock()
	return c
}

// Kill stops the component at once: its server, its connections, its background work.
func (c *Component) Kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel == nil {
		return
	}
	// As a process that dies: its connections drop first, so that its peers see the hop gone
	// (Unavailable), never an answer of a dying component whose own connections closed first.
	c.stopServing()
	if c.done != nil {
		for range c.done { // drained: serving ended
		}
	}
	c.cancel()
	c.cancel, c.stopServing, c.done = nil, nil, nil
}

// Restart kills the component if it runs and starts a fresh one on the same URL.
func (c *Component) Restart() {
	c.d.t.Helper()
	c.Kill()
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithCancel(c.d.ctx)
	serving, stopServing := context.WithCancel(ctx)
	id, err := c.d.identity(c.Name) // a new SVID at each start, as a restarted process gets
	var s *served
	if err == nil {
		s, err = c.build(ctx, c.URL, id)
	}
	if err == nil {
		c.done, err = grpcserve.Serve(serving, c.URL, s.registrar, id.ServerOptions()...)
	}
	if err == nil && s.announce != nil {
		err = s.announce(c)
	}
	c.cancel, c.stopServing = cancel, stopServing
	if err != nil {
		c.d.t.Fatalf("sandbox: start %s: %v", c.Name, err)
	}
}

// FindEndpoints returns the endpoints of that name the registry holds now.
func (d *Domain) FindEndpoints(ctx context.Context, name string) []*registry.NetworkServiceEndpoint {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cc, err := d.dial(ctx, d.Registry.URL, d.test())
	if err != nil {
		d.t.Fatal(err)
	}
	var found []*registry.NetworkServiceEndpoint
	err = adapters.NSEClient(registry.NewNetworkServiceEndpointRegistryClient(cc)).Find(ctx,
		&regnext.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{Name: name}},
		func(ev *regnext.Event[*registry.NetworkServiceEndpoint]) error {
			found = append(found, ev.Record)
			return nil
		})
	if err != nil {
		d.t.Errorf("sandbox: find %s: %v", name, err)
	}
	return found
}

// UnregisterEndpoint asks the registry itself to unregister nse, as the client named as (only
// nse's registrant may: the identity of its name, when it registered itself).
func (d *Domain) UnregisterEndpoint(ctx context.Context, as string, nse *registry.NetworkServiceEndpoint) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cc, err := d.dial(ctx, d.Registry.URL, d.NewIdentity(as))
	if err != nil {
		return err
	}
	_, err = registry.NewNetworkServiceEndpointRegistryClient(cc).Unregister(ctx, nse)
	return err
}
