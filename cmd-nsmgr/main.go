// Command cmd-nsmgr is the Network Service Manager, one per node: clients of the node send their
// Requests here; the manager finds an endpoint of the network service in the registry, picks one
// of its node's forwarders, and passes the Request on through it. Endpoints and forwarders of
// the node register through it: it passes endpoints on to the registry under its own URL
// (NSM_ADVERTISE_URL), so that other nodes come through it, and keeps its forwarders itself.
//
// It serves the nsmgr chain of sdk/pkg/networkservice/chains/nsmgr (NetworkService,
// MonitorConnection, both registry services) and the gRPC health service on every URL of
// NSM_LISTEN_ON, until SIGINT or SIGTERM. With NSM_REGISTRY_URL it uses the mesh's registry; without it, a registry
// of its own in memory, enough for a mesh of one node. Its tokens are unsigned (no SPIFFE yet).
//
// A manager that restarts has lost what it kept in memory (its forwarders, the URLs of its
// endpoints); they register again as soon as it answers, and clients heal their connections
// through it. A forwarder of its node that is gone for good (dead, or stopped, and not back
// within NSM_ORPHAN_GRACE) is unregistered, and what it built in its network namespace is
// swept (internal/sweeper).
package main

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"time"

	"vwire.dev/cmd-nsmgr/internal/sweeper"
	"vwire.dev/sdk/pkg/networkservice/chains/nsmgr"
	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	regauthorize "vwire.dev/sdk/pkg/registry/common/authorize"
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
	regauthorize.RegistryPolicyConfig
	Name             envconfig.Name       `split_words:"true" desc:"the manager's name: its segment of each connection's path and the issuer of its tokens (default: the host name)"`
	ListenOn         envconfig.ListenURLs `default:"unix:///var/lib/networkservicemesh/nsm.io.sock" split_words:"true" desc:"where to serve, one URL or several: unix:///path/to/socket, tcp://host:port (tcp://:5001 for every address, with NSM_ADVERTISE_URL)"`
	AdvertiseURL     envconfig.URL        `split_words:"true" desc:"the URL other hops dial to reach this manager, registered for the endpoints of its node (default: the first tcp URL of NSM_LISTEN_ON, else its first; required when that tcp URL is every address)"`
	RegistryURL      envconfig.URL        `split_words:"true" desc:"the mesh's registry: unix:///var/lib/networkservicemesh/registry.sock, tcp://host:port or host:port (default: a registry of its own, in memory, for a mesh of one node)"`
	MaxTokenLifetime time.Duration        `default:"10m" split_words:"true" desc:"lifetime of the tokens it signs; connections through it are refreshed before they expire"`
	DialTimeout      time.Duration        `default:"5s" split_words:"true" desc:"how long a Request waits for the next hop (a forwarder) to accept a connection"`
	MonitorOperators spiffe.IDs           `split_words:"true" desc:"SPIFFE IDs that see every connection through MonitorConnections (an operator's tools); any other caller sees only the connections it takes part in"`
	OrphanGrace      time.Duration        `default:"5s" split_words:"true" desc:"how long a connection outlives the gRPC transport its caller's last Request came over (a client that died, a forwarder of another node gone for good) before it is closed along the path; a caller that is alive asks again over a new transport within it; also how long a forwarder of this node may stay away (dead, or stopped) before it is gone for good, unregistered and swept"`

	ForwarderNetworkServiceName envconfig.Name `default:"forwarder" split_words:"true" desc:"the network service forwarders register under; this manager finds them under forwarder only"`
	RegistryClientPolicies      string         `split_words:"true" unused:"no client-side policies: a component trusts the answers of the registry it reached over mutual TLS" desc:"OPA policy files (.rego) and directories that check the registry's answers"`
	envconfig.NotYet
}

const about = `cmd-nsmgr: the Network Service Manager of a node. Clients of the node request network
services here; it finds an endpoint in the registry (NSM_REGISTRY_URL, or one of its own in
memory), picks a forwarder of its node and passes the Request on. Endpoints and forwarders of the
node register through it. Serves until SIGINT or SIGTERM.`

func main() { command(&config{}).Main() }

func command(c *config) envconfig.Command {
	return envconfig.Command{Name: "cmd-nsmgr", About: about, Spec: c, Run: func(ctx context.Context) error {
		return run(ctx, c)
	}}
}

func run(ctx context.Context, c *config) error {
	if c.ForwarderNetworkServiceName != "forwarder" {
		return &envconfig.Error{Var: "NSM_FORWARDER_NETWORK_SERVICE_NAME", Value: string(c.ForwarderNetworkServiceName),
			Problem: "this manager finds forwarders under the network service forwarder only; leave it unset"}
	}
	name, err := managerName(c)
	if err != nil {
		return err
	}
	id, err := c.Config.Load(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = id.Close() }()
	self, err := advertised(c)
	if err != nil {
		return err
	}
	authz, err := c.PolicyConfig.Options(id)
	if err != nil {
		return err
	}
	regAuthz, err := c.RegistryPolicyConfig.Options(id)
	if err != nil {
		return err
	}
	tokens, err := id.Tokens(name, c.MaxTokenLifetime)
	if err != nil {
		return err
	}
	opts := []nsmgr.Option{
		nsmgr.WithName(name),
		nsmgr.WithURL(self),
		nsmgr.WithDialOptions(dial.WithDialTimeout(c.DialTimeout), dial.WithDialOptions(id.DialOptions()...)),
		nsmgr.WithAuthorizeOptions(authz...),
		nsmgr.WithRegistryAuthorizeOptions(regAuthz...),
		nsmgr.WithMonitorOptions(monitor.WithOperators(c.MonitorOperators...)),
		nsmgr.WithOrphanGrace(c.OrphanGrace),
		nsmgr.WithForwarderGone(sweeper.New().Watch), // a forwarder gone for good leaves nothing on the node
	}
	registry := "in memory"
	if c.RegistryURL.URL != nil {
		// Reconnects quickly: endpoints' heal after a registry restart goes through here.
		cc, err := regclient.Dial(c.RegistryURL.URL, append(id.DialOptions(), regclient.WithTokens(tokens))...)
		if err != nil {
			return fmt.Errorf("connect to the registry at %s: %w", c.RegistryURL, err)
		}
		defer func() { _ = cc.Close() }()
		opts = append(opts, nsmgr.WithRegistry(cc))
		registry = c.RegistryURL.String()
	}

	mgr := nsmgr.NewServer(ctx, tokens, opts...)
	errs, err := grpcserve.ServeAll(ctx, c.ListenOn, mgr, id.ServerOptions()...)
	if err != nil {
		return err
	}
	log.FromContext(ctx).Info("serving", "name", name, "spiffe_id", id.ID().String(), "url", c.ListenOn.String(), "advertised", self.String(), "registry", registry)
	for err := range errs {
		return err
	}
	return nil
}

// managerName is NSM_NAME, else the host name.
func managerName(c *config) (string, error) {
	if c.Name != "" {
		return string(c.Name), nil
	}
	host, err := os.Hostname()
	if err != nil {
		return "", &envconfig.Error{Var: "NSM_NAME", Unset: true, Problem: fmt.Sprintf("not set, and the host name is unknown (%v); set it", err)}
	}
	var n envconfig.Name
	if err := n.Decode(host); err != nil {
		return "", &envconfig.Error{Var: "NSM_NAME", Unset: true, Problem: fmt.Sprintf("not set, and the host name %q is no name (%v); set it", host, err)}
	}
	return string(n), nil
}

// advertised is the URL other hops dial to reach the manager: NSM_ADVERTISE_URL, else the first
// tcp URL it listens on (as NSM's manager registers), which must then name one address, else
// the first URL it listens on.
func advertised(c *config) (*url.URL, error) {
	if c.AdvertiseURL.URL != nil {
		return c.AdvertiseURL.URL, nil
	}
	for _, listen := range c.ListenOn {
		if listen.Scheme != hopurl.TCP {
			continue
		}
		if ip, err := netip.ParseAddr(listen.Hostname()); listen.Hostname() == "" || (err == nil && ip.IsUnspecified()) {
			return nil, &envconfig.Error{Var: "NSM_ADVERTISE_URL", Unset: true, Problem: fmt.Sprintf(
				"not set, and NSM_LISTEN_ON's %s is every address of the node, which other hops cannot dial; set it to the node's URL, e.g. tcp://10.0.0.1:%s",
				listen, listen.Port())}
		}
		return listen, nil
	}
	return c.ListenOn[0], nil
}
