// Command cmd-nse-icmp-responder is a Network Service Endpoint that gives every client a
// point-to-point vWire with addresses from NSM_CIDR_PREFIX and answers ping on its end: the
// endpoint of NSM's examples and of vwire's own tests.
//
// It serves the endpoint chain (sdk/pkg/networkservice/chains/endpoint) with point2pointipam
// (groupipam for NSM's CIDR groups, [a,b],[c]; behind strictipam with NSM_IPAM_POLICY=strict)
// and the KERNEL mechanism (and dnscontext with NSM_DNS_CONFIGS, onidle with NSM_IDLE_TIMEOUT,
// which stops the program as a signal does) on NSM_LISTEN_ON, and registers itself (and, unless
// told not to, its
// network services first) at NSM_CONNECT_TO: the node's nsmgr, or a registry. register.Serve
// (sdk/pkg/registry/register) does both: it waits up to NSM_REGISTER_TIMEOUT for a registry that
// is not up yet, refreshes the registration before it expires, and makes both again as soon as a
// registry that restarted answers; at SIGINT or SIGTERM it unregisters, then stops serving.
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
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	kernelmech "github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/kernel"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/sendfd"
	"vwire.dev/sdk/pkg/networkservice/common/onidle"
	"vwire.dev/sdk/pkg/networkservice/connectioncontext/dnscontext"
	"vwire.dev/sdk/pkg/networkservice/ipam/groupipam"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/networkservice/ipam/strictipam"
	"vwire.dev/sdk/pkg/registry/register"
	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

type config struct {
	envconfig.Common
	spiffe.Config
	authorize.PolicyConfig
	Name             envconfig.Name         `default:"icmp-responder-nse" split_words:"true" desc:"the endpoint's name in the registry; unique among endpoints"`
	ServiceNames     envconfig.Names        `default:"icmp-responder" split_words:"true" desc:"the network services it provides"`
	Labels           envconfig.Labels       `split_words:"true" desc:"its labels for each of its services, which clients select endpoints by: app=web,version=2"`
	CIDRPrefix       envconfig.PrefixGroups `default:"169.254.0.0/16" split_words:"true" desc:"where addresses come from, a pair per vWire and family: IPv4, IPv6 or both; NSM's groups in brackets, [10.0.0.0/24,fd00::/120],[10.1.0.0/24], are pools of their own, a pair from each"`
	ListenOn         envconfig.URL          `split_words:"true" desc:"where to serve, and the URL it registers (default: a socket in a new temporary directory)"`
	ConnectTo        envconfig.URL          `default:"unix:///var/lib/networkservicemesh/nsm.io.sock" split_words:"true" desc:"where to register: the node's nsmgr, or a registry"`
	Payload          payloadName            `default:"IP" split_words:"true" desc:"the payload of its services, when it registers them: IP or ETHERNET"`
	RegisterService  bool                   `default:"true" split_words:"true" desc:"register its network services too, not only itself"`
	RegisterTimeout  time.Duration          `default:"15s" split_words:"true" desc:"how long the first registration may wait for the registry to answer; also bounds the unregistration at exit"`
	MaxTokenLifetime time.Duration          `default:"10m" split_words:"true" desc:"lifetime of the tokens it signs"`
	DNSConfigs       dnsConfigs             `split_words:"true" desc:"DNS configurations given to every client with its vWire, a JSON list: [{\"dns_server_ips\":[\"172.16.1.2\"],\"search_domains\":[\"my.coredns.service\"]}]"`
	IdleTimeout      time.Duration          `default:"0" split_words:"true" desc:"stop (unregistering) after this long without a connection; 0: never"`
	IPAMPolicy       ipamPolicy             `default:"polite" split_words:"true" desc:"polite: a client keeps the addresses it brings that are outside NSM_CIDR_PREFIX, beside its new ones; strict: they are dropped (with their routes), as for a client that comes from another endpoint"`
	PassSocket       bool                   `default:"true" split_words:"true" desc:"when NSM_LISTEN_ON and NSM_CONNECT_TO are both unix sockets, hand the listening socket to the nsmgr as a descriptor beside the registration (an inode:// URL, as NSM's endpoints do), so it reaches the endpoint from any mount namespace (a pod's); false registers the socket's path, for a registry reached directly"`

	BaseDir                string `split_words:"true" unused:"no policy files are read yet" desc:"the directory relative policy paths start from"`
	RegistryClientPolicies string `split_words:"true" unused:"no client-side policies: a component trusts the answers of the registry it reached over mutual TLS" desc:"OPA policy files (.rego) and directories that check the registry's answers"`
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

// ipamPolicy is NSM's polite or strict.
type ipamPolicy string

func (p *ipamPolicy) Decode(value string) error {
	if value != "polite" && value != "strict" {
		return fmt.Errorf("want polite or strict")
	}
	*p = ipamPolicy(value)
	return nil
}

func (ipamPolicy) TypeName() string { return "policy" }

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
	name := string(c.Name)
	tokens, err := id.Tokens(name, c.MaxTokenLifetime)
	if err != nil {
		return err
	}
	authz, err := c.PolicyConfig.Options(id)
	if err != nil {
		return err
	}
	nse := &registry.NetworkServiceEndpoint{
		Name:                 name,
		NetworkServiceNames:  c.ServiceNames,
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{},
	}
	for _, service := range c.ServiceNames {
		nse.NetworkServiceLabels[service] = &registry.NetworkServiceLabels{Labels: c.Labels}
	}
	opts := []register.Option{register.WithIdentity(id, tokens), register.WithTimeout(c.RegisterTimeout, "NSM_REGISTER_TIMEOUT")}
	if c.RegisterService {
		opts = append(opts, register.WithServices(string(c.Payload)))
	}
	if !c.PassSocket {
		opts = append(opts, register.WithSocketPath())
	}
	return register.Serve(ctx, c.ListenOn.URL, c.ConnectTo.URL, nse, func(serving context.Context, _ grpc.ClientConnInterface) (grpcserve.Registrar, error) {
		return endpoint.NewServer(serving, tokens,
			endpoint.WithName(name),
			endpoint.WithAuthorizeOptions(authz...),
			endpoint.WithAdditionalFunctionality(
				onidle.NewServer(serving, func() {
					log.FromContext(ctx).Info("no connection for NSM_IDLE_TIMEOUT; stopping", "NSM_IDLE_TIMEOUT", c.IdleTimeout)
					retire()
				}, onidle.WithTimeout(c.IdleTimeout)),
				dnscontext.NewServer(c.DNSConfigs...),
				ipam(c),
				sendfd.NewServer(), // the namespace goes to the forwarder as a descriptor, not as a path
				mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{
					kernelmech.MECHANISM: kernel.NewServer(), // this process's namespace, stated in the mechanism it accepts
				}),
			)), nil
	}, opts...)
}

// ipam hands out a link per vWire from NSM_CIDR_PREFIX, a link per group and family where it
// has several groups, under NSM_IPAM_POLICY.
func ipam(c *config) networkservice.NetworkServiceServer {
	newIPAM := point2pointipam.NewServer
	if len(c.CIDRPrefix) > 1 {
		// strictipam gives it every group's prefixes in one list; the groups are c's.
		newIPAM = func(...netip.Prefix) networkservice.NetworkServiceServer { return groupipam.NewServer(c.CIDRPrefix) }
	}
	all := slices.Concat(c.CIDRPrefix...)
	if c.IPAMPolicy == "strict" {
		return strictipam.NewServer(newIPAM, all...)
	}
	return newIPAM(all...)
}
