// Command cmd-nse-icmp-responder is a Network Service Endpoint that gives every client a
// point-to-point vWire with addresses from NSM_CIDR_PREFIX and answers ping on its end: the
// endpoint of NSM's examples and of vwire's own tests.
//
// It serves the endpoint chain (sdk/pkg/networkservice/chains/endpoint) with point2pointipam and
// the KERNEL mechanism on NSM_LISTEN_ON, and registers itself (and, unless told not to, its
// network services) at NSM_CONNECT_TO: the node's nsmgr, or a registry, with the registry client
// chain (sdk/pkg/registry/chains/client): the registration is refreshed before it expires, and
// made again as soon as a registry that restarted answers. At SIGINT or SIGTERM it unregisters, then stops serving.
//
// The endpoint makes no interface itself: the forwarder builds the vWire's end in the
// endpoint's network namespace, which the endpoint states in the KERNEL mechanism it accepts
// (inodeURL file:///proc/<pid>/ns/net), and puts the endpoint's address on it (the IP context's
// dst_ip_addrs). The kernel then answers ICMP echo on it: there is nothing else to do.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/registry/common/connect"
	"vwire.dev/sdk/pkg/registry/common/updatepath"
	regnext "vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/hopurl"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/token"
)

type config struct {
	envconfig.Common
	Name             envconfig.Name     `default:"icmp-responder-nse" split_words:"true" desc:"the endpoint's name in the registry; unique among endpoints"`
	ServiceNames     envconfig.Names    `default:"icmp-responder" split_words:"true" desc:"the network services it provides"`
	Labels           envconfig.Labels   `split_words:"true" desc:"its labels for each of its services, which clients select endpoints by: app=web,version=2"`
	CIDRPrefix       envconfig.Prefixes `default:"169.254.0.0/16" split_words:"true" desc:"where addresses come from, a pair per vWire and family: IPv4, IPv6 or both"`
	ListenOn         envconfig.URL      `split_words:"true" desc:"where to serve, and the URL it registers (default: a socket in a new temporary directory)"`
	ConnectTo        envconfig.URL      `default:"unix:///var/lib/networkservicemesh/nsm.io.sock" split_words:"true" desc:"where to register: the node's nsmgr, or a registry"`
	Payload          payloadName        `default:"IP" split_words:"true" desc:"the payload of its services, when it registers them: IP or ETHERNET"`
	RegisterService  bool               `default:"true" split_words:"true" desc:"register its network services too, not only itself"`
	RegisterTimeout  time.Duration      `default:"15s" split_words:"true" desc:"how long the first registration may wait for the registry to answer; also bounds the unregistration at exit"`
	MaxTokenLifetime time.Duration      `default:"10m" split_words:"true" desc:"lifetime of the tokens it signs"`
}

// payloadName is IP or ETHERNET.
type payloadName string

func (p *payloadName) Decode(value string) error {
	if value != payload.IP && value != payload.Ethernet {
		return fmt.Errorf("want %s or %s", payload.IP, payload.Ethernet)
	}
	*p = payloadName(value)
	return nil
}

func (payloadName) TypeName() string { return "payload" }

const about = `cmd-nse-icmp-responder: a Network Service Mesh endpoint that gives every client a
point-to-point vWire with addresses from NSM_CIDR_PREFIX, over a KERNEL interface that the
forwarder makes in this process's network namespace, and answers ping on its end. It registers
itself at NSM_CONNECT_TO, refreshes its registration, and unregisters at SIGINT or SIGTERM.`

func main() { command(&config{}).Main() }

func command(c *config) envconfig.Command {
	return envconfig.Command{Name: "cmd-nse-icmp-responder", About: about, Spec: c, Run: func(ctx context.Context) error {
		return run(ctx, c)
	}}
}

func run(ctx context.Context, c *config) error {
	listen := c.ListenOn.URL
	if listen == nil {
		dir, err := os.MkdirTemp("", "vw-nse")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(dir) }()
		listen = &url.URL{Scheme: hopurl.Unix, Path: filepath.Join(dir, "nse.sock")}
	}

	// Serving outlives ctx (the signal) until the endpoint is unregistered: no client is sent
	// here by then, and those that still come are answered.
	serving, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	name := string(c.Name)
	ep := endpoint.NewServer(serving, token.NewInsecure(c.MaxTokenLifetime, token.WithName(name)),
		endpoint.WithName(name),
		endpoint.WithAdditionalFunctionality(
			point2pointipam.NewServer(c.CIDRPrefix...),
			mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{
				kernel.MECHANISM: ownNetNS(fmt.Sprintf("file:///proc/%d/ns/net", os.Getpid())),
			}),
		))
	errs, err := endpoint.Serve(serving, listen, ep)
	if err != nil {
		return err
	}
	logger := log.FromContext(ctx)
	logger.Info("serving", "url", listen.String())

	reg, err := register(ctx, c, listen)
	if err != nil {
		stopServing()
		drain(errs)
		if ctx.Err() != nil {
			return nil // stopped while registering: nothing is registered
		}
		return err
	}
	defer reg.close()

	select {
	case <-ctx.Done():
	case err = <-errs: // serving failed: unregister, then tell
	}
	unregisterErr := reg.unregister()
	stopServing()
	for e := range errs {
		err = errors.Join(err, e)
	}
	return errors.Join(err, unregisterErr)
}

// drain waits until errs is closed.
func drain(errs <-chan error) {
	for err := range errs {
		_ = err // serving ends because the program does; the error that made it end is told
	}
}

// registration is the endpoint's registration and the chain that keeps it.
type registration struct {
	c       *config
	cc      *grpc.ClientConn
	chain   regnext.NSE
	nse     *registry.NetworkServiceEndpoint
	target  string
	stop    context.CancelFunc // ends refresh and heal
	watched chan struct{}      // closed when the watch that lets heal notice a restart ended
}

// register registers the endpoint's services (unless told not to) and the endpoint at
// NSM_CONNECT_TO, trying again while it is unreachable, for at most NSM_REGISTER_TIMEOUT. Then
// the registration is refreshed before it expires, and made again when the registry restarted.
func register(ctx context.Context, c *config, listen *url.URL) (*registration, error) {
	target, _ := hopurl.Target(c.ConnectTo.URL) // checked with the configuration
	cc, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Come back to a registry that restarted quickly, as registry heal expects.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second,
		}}))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.ConnectTo, err)
	}
	name := string(c.Name)
	background, stop := context.WithCancel(context.WithoutCancel(ctx))
	r := &registration{
		c:      c,
		cc:     cc,
		chain:  regclient.NewNSE(background, cc, name),
		target: c.ConnectTo.String(),
		stop:   stop,
		nse: &registry.NetworkServiceEndpoint{
			Name:                 name,
			NetworkServiceNames:  c.ServiceNames,
			NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{},
			Url:                  listen.String(),
		},
	}
	for _, service := range c.ServiceNames {
		r.nse.NetworkServiceLabels[service] = &registry.NetworkServiceLabels{Labels: c.Labels}
	}

	first, cancel := context.WithTimeout(ctx, c.RegisterTimeout)
	defer cancel()
	if c.RegisterService {
		services := regnext.Chain(updatepath.NewNS(name), connect.NewNS(cc))
		for _, service := range c.ServiceNames {
			ns := &registry.NetworkService{Name: service, Payload: string(c.Payload)}
			_, err := untilReachable(first, func() (*registry.NetworkService, error) { return services.Register(first, ns) })
			if status.Code(err) == codes.PermissionDenied { // another endpoint of the service registered it
				log.FromContext(ctx).Info("network service registered by another endpoint", "service", service, "reason", describe(err))
				continue
			}
			if err != nil {
				_ = cc.Close()
				stop()
				return nil, r.explain("register network service "+service, first, err)
			}
		}
	}
	got, err := untilReachable(first, func() (*registry.NetworkServiceEndpoint, error) { return r.chain.Register(first, r.nse) })
	if err != nil {
		_ = cc.Close()
		stop()
		return nil, r.explain("register", first, err)
	}
	// A watch of its own name, through heal: when it breaks and the registry answers again, heal
	// registers the endpoint again at once instead of at the next refresh.
	r.watched = make(chan struct{})
	go func() {
		defer close(r.watched)
		own := &regnext.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{Name: name}, Watch: true}
		_ = r.chain.Find(background, own, func(*regnext.Event[*registry.NetworkServiceEndpoint]) error { return nil })
	}()
	log.FromContext(ctx).Info("registered", "name", name, "services", c.ServiceNames, "at", r.target,
		"expires", got.GetExpirationTime().AsTime().Format(time.RFC3339))
	return r, nil
}

// untilReachable calls register until it returns something other than Unavailable (the registry
// is not up yet), waiting a little longer each time, until ctx ends.
func untilReachable[R any](ctx context.Context, register func() (R, error)) (R, error) {
	wait := 50 * time.Millisecond
	for {
		got, err := register()
		if status.Code(err) != codes.Unavailable {
			return got, err
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return got, err
		case <-timer.C:
		}
		wait = min(2*wait, time.Second)
	}
}

// explain says which registry failed, and whether the time ran out (ctx is the attempt's).
func (r *registration) explain(what string, ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s at %s: no answer within NSM_REGISTER_TIMEOUT=%s; is the nsmgr or registry running there? (%s)",
			what, r.target, r.c.RegisterTimeout, describe(err))
	}
	return fmt.Errorf("%s at %s: %s", what, r.target, describe(err))
}

// describe is a gRPC status as "Code: message", for a person rather than a program.
func describe(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String() + ": " + s.Message()
	}
	return err.Error()
}

// unregister unregisters the endpoint, waiting at most NSM_REGISTER_TIMEOUT.
func (r *registration) unregister() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.c.RegisterTimeout)
	defer cancel()
	if err := r.chain.Unregister(ctx, r.nse); err != nil {
		return r.explain("unregister", ctx, err)
	}
	return nil
}

// close ends the registration's background work and its connection.
func (r *registration) close() {
	r.stop()
	<-r.watched
	_ = r.cc.Close()
}

// ownNetNS states the endpoint's network namespace in the KERNEL mechanism it accepts, so that
// the forwarder makes the endpoint's end of the vWire there.
type ownNetNS string

func (n ownNetNS) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	kernel.ToMechanism(req.GetConnection().GetMechanism()).SetNetNSURL(string(n))
	return next.Server(ctx).Request(ctx, req)
}

func (n ownNetNS) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}
