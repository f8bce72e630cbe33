// Command cmd-nse-icmp-responder is a Network Service Endpoint that gives every client a
// point-to-point vWire with addresses from NSM_CIDR_PREFIX and answers ping on its end: the
// endpoint of NSM's examples and of vwire's own tests.
//
// It serves the endpoint chain (sdk/pkg/networkservice/chains/endpoint) with point2pointipam and
// the KERNEL mechanism (and dnscontext with NSM_DNS_CONFIGS, onidle with NSM_IDLE_TIMEOUT, which
// stops the program as a signal does) on NSM_LISTEN_ON, and registers itself (and, unless told not to, its
// network services first) at NSM_CONNECT_TO: the node's nsmgr, or a registry, with the registry
// client (sdk/pkg/registry/chains/client), which waits up to NSM_REGISTER_TIMEOUT for a registry
// that is not up yet; the registration is refreshed before it expires, and both are made again
// as soon as a registry that restarted answers. At SIGINT or SIGTERM it unregisters, then stops
// serving.
//
// The endpoint makes no interface itself: the forwarder builds the vWire's end in the
// endpoint's network namespace, which the endpoint states in the KERNEL mechanism it accepts
// (inodeURL file:///proc/<pid>/ns/net) and passes to the forwarder as a descriptor with its
// answer (sdk's sendfd server: inode://<dev>/<ino>, as NSM's endpoints do), and puts the
// endpoint's address on it (the IP context's dst_ip_addrs). The kernel then answers ICMP echo on
// it: there is nothing else to do.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/sendfd"
	"vwire.dev/sdk/pkg/networkservice/common/onidle"
	"vwire.dev/sdk/pkg/networkservice/connectioncontext/dnscontext"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/hopurl"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

type config struct {
	envconfig.Common
	spiffe.Config
	authorize.PolicyConfig
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
	DNSConfigs       dnsConfigs         `split_words:"true" desc:"DNS configurations given to every client with its vWire, a JSON list: [{\"dns_server_ips\":[\"172.16.1.2\"],\"search_domains\":[\"my.coredns.service\"]}]"`
	IdleTimeout      time.Duration      `default:"0" split_words:"true" desc:"stop (unregistering) after this long without a connection; 0: never"`
	PassSocket       bool               `default:"true" split_words:"true" desc:"when NSM_LISTEN_ON and NSM_CONNECT_TO are both unix sockets, hand the listening socket to the nsmgr as a descriptor beside the registration (an inode:// URL, as NSM's endpoints do), so it reaches the endpoint from any mount namespace (a pod's); false registers the socket's path, for a registry reached directly"`

	BaseDir                string `split_words:"true" unused:"no policy files are read yet" desc:"the directory relative policy paths start from"`
	RegistryClientPolicies string `split_words:"true" unused:"no client-side policies: a component trusts the answers of the registry it reached over mutual TLS" desc:"OPA policy files (.rego) and directories that check the registry's answers"`
	IPAMPolicy             string `split_words:"true" unused:"vwire's IPAM acts as NSM's strict (a client keeps the addresses it brings only when they are free in NSM_CIDR_PREFIX)" desc:"polite (take a client's addresses as they are) or strict"`
	UnregisterItself       bool   `split_words:"true" unused:"the endpoint always unregisters at exit" desc:"unregister at exit (NSM's default: no, the registration expires)"`
	PBRConfigPath          string `split_words:"true" unused:"no policy-based routing yet" desc:"a file of policy-based routes for the endpoint's side of each vWire"`
	envconfig.NotYet
}

// dnsConfigs is a JSON list of NSM's DNSConfig messages, as NSM's endpoints read it; the field
// names are the proto's (dns_server_ips) or their JSON form (dnsServerIps).
type dnsConfigs []*networkservice.DNSConfig

func (d *dnsConfigs) Decode(value string) error {
	var items []json.RawMessage
	if err := json.Unmarshal([]byte(value), &items); err != nil {
		return fmt.Errorf("not a JSON list (%v); write [{\"dns_server_ips\":[\"10.0.0.1\"],\"search_domains\":[\"example.com\"]}]", err)
	}
	out := make(dnsConfigs, 0, len(items))
	for i, item := range items {
		c := &networkservice.DNSConfig{}
		if err := protojson.Unmarshal(item, c); err != nil {
			return fmt.Errorf("item %d: %v", i+1, err)
		}
		for _, ip := range c.GetDnsServerIps() {
			if _, err := netip.ParseAddr(ip); err != nil {
				return fmt.Errorf("item %d: dns_server_ips: %q is not an IP address", i+1, ip)
			}
		}
		out = append(out, c)
	}
	*d = out
	return nil
}

func (dnsConfigs) TypeName() string { return "JSON" }

func (d dnsConfigs) String() string {
	s := make([]string, len(d))
	for i, c := range d {
		s[i] = protojson.Format(c)
	}
	return "[" + strings.Join(s, ",") + "]"
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
	// An endpoint idle for NSM_IDLE_TIMEOUT stops as a signal would stop it.
	ctx, retire := context.WithCancel(ctx)
	defer retire()
	id, err := c.Config.Load(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = id.Close() }()
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
	tokens, err := id.Tokens(name, c.MaxTokenLifetime)
	if err != nil {
		return err
	}
	authz, err := c.PolicyConfig.Options(id)
	if err != nil {
		return err
	}
	ep := endpoint.NewServer(serving, tokens,
		endpoint.WithName(name),
		endpoint.WithAuthorizeOptions(authz...),
		endpoint.WithAdditionalFunctionality(
			onidle.NewServer(serving, func() {
				log.FromContext(ctx).Info("no connection for NSM_IDLE_TIMEOUT; stopping", "NSM_IDLE_TIMEOUT", c.IdleTimeout)
				retire()
			}, onidle.WithTimeout(c.IdleTimeout)),
			dnscontext.NewServer(c.DNSConfigs...),
			point2pointipam.NewServer(c.CIDRPrefix...),
			sendfd.NewServer(), // the namespace goes to the forwarder as a descriptor, not as a path
			mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{
				kernel.MECHANISM: ownNetNS(fmt.Sprintf("file:///proc/%d/ns/net", os.Getpid())),
			}),
		))
	errs, err := endpoint.Serve(serving, listen, ep, id.ServerOptions()...)
	if err != nil {
		return err
	}
	logger := log.FromContext(ctx)
	logger.Info("serving", "url", listen.String())

	var reg *registration
	defer func() {
		if reg != nil {
			reg.close()
		}
	}()
	return grpcserve.Registered(ctx, errs, stopServing, func() (func() error, error) {
		var err error
		if reg, err = register(ctx, c, append(id.DialOptions(), regclient.WithTokens(tokens)), listen); err != nil {
			return nil, err
		}
		return reg.unregisterEndpoint, nil
	})
}

// registration is the endpoint's registration, kept by the registry client chain.
type registration struct {
	c          *config
	cc         *grpc.ClientConn
	target     string
	unregister func(context.Context) error // also ends refresh and heal
}

// register registers the endpoint's network services (unless told not to) and the endpoint at
// NSM_CONNECT_TO, waiting up to NSM_REGISTER_TIMEOUT for it to answer. From then on the
// registrations are refreshed before they expire, and made again when the registry restarted,
// until ctx ends or the endpoint unregisters.
func register(ctx context.Context, c *config, dialOpts []grpc.DialOption, listen *url.URL) (*registration, error) {
	cc, err := regclient.Dial(c.ConnectTo.URL, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.ConnectTo, err)
	}
	name := string(c.Name)
	r := &registration{c: c, cc: cc, target: c.ConnectTo.String()}
	// The services' registrations are kept until the program ends; the endpoint's until it
	// unregisters.
	if c.RegisterService {
		for _, service := range c.ServiceNames {
			ns := &registry.NetworkService{Name: service, Payload: string(c.Payload)}
			if _, _, err := regclient.RegisterNS(ctx, cc, ns, regclient.WithTimeout(c.RegisterTimeout)); err != nil {
				_ = cc.Close()
				return nil, r.explain("register network service "+service, err, isNoAnswer(err))
			}
		}
	}
	nse := &registry.NetworkServiceEndpoint{
		Name:                 name,
		NetworkServiceNames:  c.ServiceNames,
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{},
		Url:                  listen.String(),
	}
	for _, service := range c.ServiceNames {
		nse.NetworkServiceLabels[service] = &registry.NetworkServiceLabels{Labels: c.Labels}
	}
	opts := []regclient.Option{regclient.WithTimeout(c.RegisterTimeout)}
	if c.PassSocket && listen.Scheme == "unix" && c.ConnectTo.Scheme == "unix" {
		opts = append(opts, regclient.WithSocketPassed())
	}
	got, unregister, err := regclient.Register(ctx, cc, nse, opts...)
	if err != nil {
		_ = cc.Close()
		return nil, r.explain("register", err, isNoAnswer(err))
	}
	r.unregister = unregister
	log.FromContext(ctx).Info("registered", "name", name, "services", c.ServiceNames, "at", r.target,
		"expires", got.GetExpirationTime().AsTime().Format(time.RFC3339))
	return r, nil
}

// isNoAnswer reports whether a registration with a timeout failed because the registry did not
// answer.
func isNoAnswer(err error) bool {
	code := status.Code(err)
	return code == codes.Unavailable || code == codes.DeadlineExceeded
}

// explain says which registry failed, and whether the time ran out.
func (r *registration) explain(what string, err error, timedOut bool) error {
	if timedOut {
		return fmt.Errorf("%s at %s: no answer within NSM_REGISTER_TIMEOUT=%s; is the nsmgr or registry running there? (%s)",
			what, r.target, r.c.RegisterTimeout, describe(err))
	}
	return fmt.Errorf("%s at %s: %s", what, r.target, describe(err))
}

// describe is the innermost gRPC status of err as "Code: message", for a person rather than a
// program.
func describe(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		s := se.GRPCStatus()
		return s.Code().String() + ": " + s.Message()
	}
	return err.Error()
}

// unregisterEndpoint unregisters the endpoint, waiting at most NSM_REGISTER_TIMEOUT.
func (r *registration) unregisterEndpoint() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.c.RegisterTimeout)
	defer cancel()
	if err := r.unregister(ctx); err != nil {
		return r.explain("unregister", err, ctx.Err() != nil)
	}
	return nil
}

// close ends the registration's connection.
func (r *registration) close() { _ = r.cc.Close() }

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
