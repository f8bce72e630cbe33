// Command cmd-nsc is a Network Service Client: it asks for the network services listed in
// NSM_NETWORK_SERVICES, keeps the connections (refreshed, healed) until SIGINT or SIGTERM, then
// closes them all. With NSM_NETWORK_SERVICES_FILE its list may change while it runs: at SIGHUP
// and when the file changes it connects the services added and closes those removed, leaving
// the others alone (services.go).
//
// Each service is a client URL, kernel://icmp-responder/nsm-1?app=web: a KERNEL interface named
// nsm-1 in this process's network namespace, to an endpoint of icmp-responder labelled app=web.
// The requests go through NSM_CONNECT_TO, the node's nsmgr, with the standard client chain
// (sdk/pkg/networkservice/chains/client: refresh, heal, retry). The forwarder makes the
// interface; the client states where and how it is named: its netns, named
// file:///proc/<pid>/ns/net, goes to the nsmgr as a descriptor beside every Request and Close
// (inodeURL inode://<dev>/<ino>, as NSM's clients send it; the client chain's sendfd), so that it
// works from a mount namespace of its own (a pod's), over NSM_CONNECT_TO's unix socket.
//
// The names are the client's own in its namespace: at start, a vWire already there under one of
// them (its alias says it is one) is what a previous run left when it died: its connection is
// closed along the path (leftover.go) and what remains of it removed before the request; any
// other interface of that name stops the client with an error.
package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"

	"vwire.dev/api/nsurl"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	kernelmech "vwire.dev/sdk/pkg/networkservice/common/mechanisms/kernel"
	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

type config struct {
	envconfig.Common
	spiffe.Config
	Name                envconfig.Name   `default:"nsc" split_words:"true" desc:"the client's name: its segment of each connection's path"`
	NetworkServices     serviceURLs      `split_words:"true" desc:"the network services to ask for, as client URLs mechanism://service[@domain]/interface?label=value: kernel://icmp-responder/nsm-1?app=web (interface default: nsm-1, nsm-2, ... by position; mechanism default: NSM_MECHANISM); required unless NSM_NETWORK_SERVICES_FILE is set"`
	NetworkServicesFile string           `split_words:"true" desc:"a file holding the list of NSM_NETWORK_SERVICES, which it replaces: read at start, again at SIGHUP and when it changes (looked at every second); only the services added or removed are connected or closed"`
	Labels              envconfig.Labels `split_words:"true" desc:"labels of the client, sent with every request; a URL's own labels win"`
	ConnectTo           envconfig.URL    `default:"unix:///var/lib/networkservicemesh/nsm.io.sock" split_words:"true" desc:"the node's nsmgr (or, to test, an endpoint)"`
	DialTimeout         time.Duration    `default:"5s" split_words:"true" desc:"how long a call waits for NSM_CONNECT_TO to accept a connection"`
	RequestTimeout      time.Duration    `default:"15s" split_words:"true" desc:"how long the first Request of each service may take, retries included; also bounds each Close at exit"`
	MaxTokenLifetime    time.Duration    `default:"10m" split_words:"true" desc:"lifetime of the tokens it signs; connections are refreshed before they expire"`
	Mechanism           mechanism        `default:"kernel" split_words:"true" desc:"the mechanism of a URL of NSM_NETWORK_SERVICES written without one (icmp-responder/nsm-1): kernel, the only one this client asks for"`

	AwarenessGroups       string        `split_words:"true" unused:"no excluded-prefix sharing between endpoints yet" desc:"groups of network service URLs whose endpoints must not hand out overlapping addresses: [kernel://a,kernel://b],[kernel://c]"`
	LocalDNSServerEnabled bool          `split_words:"true" unused:"no DNS for vWires yet" desc:"serve DNS locally with the endpoints' DNS configs"`
	LocalDNSServerAddress string        `split_words:"true" unused:"no DNS for vWires yet" desc:"where the local DNS server listens, host:port"`
	LivenessCheckEnabled  bool          `split_words:"true" unused:"heal follows the control plane only, no ping check of the vWire yet" desc:"ping through each vWire and heal when it stops answering"`
	LivenessCheckInterval time.Duration `split_words:"true" unused:"no ping check of the vWire yet" desc:"how often the vWire is pinged"`
	LivenessCheckTimeout  time.Duration `split_words:"true" unused:"no ping check of the vWire yet" desc:"how long a ping may take"`
	envconfig.NotYet
}

// mechanism is the client's default mechanism: kernel, NSM's default; NSM's other one, vfio,
// is refused.
type mechanism string

func (m *mechanism) Decode(value string) error {
	if !strings.EqualFold(strings.TrimSpace(value), kernel.MECHANISM) {
		return errors.New("this client asks for kernel interfaces only; use kernel")
	}
	*m = "kernel"
	return nil
}

func (mechanism) TypeName() string { return "mechanism" }

// serviceURLs is the list of client URLs, each with its interface name.
type serviceURLs []*nsurl.URL

func (s *serviceURLs) Decode(value string) error {
	var out serviceURLs
	names := map[string]bool{}
	err := envconfig.DecodeList(value, func(item string) error {
		if !strings.Contains(item, "://") {
			// As NSM's client, which takes these for NSM_MECHANISM's; kernel is the only one here.
			item = "kernel://" + item
		}
		u, err := nsurl.Parse(item)
		if err != nil {
			return err
		}
		if u.Mechanism != kernel.MECHANISM {
			return fmt.Errorf("mechanism %s is not supported by this client; use kernel://", u.Mechanism)
		}
		if u.Interface == "" {
			u.Interface = fmt.Sprintf("nsm-%d", len(out)+1)
		}
		if names[u.Interface] {
			return fmt.Errorf("interface %s is taken by another URL; give each its own: kernel://service/name", u.Interface)
		}
		names[u.Interface] = true
		out = append(out, u)
		return nil
	})
	if err != nil {
		return err
	}
	if len(out) == 0 {
		return errors.New("no URL; give at least one, e.g. kernel://icmp-responder/nsm-1")
	}
	*s = out
	return nil
}

func (serviceURLs) TypeName() string { return "client URL list" }

func (s serviceURLs) String() string {
	out := ""
	for i, u := range s {
		if i > 0 {
			out += ","
		}
		out += u.String()
	}
	return out
}

const about = `cmd-nsc: a Network Service Mesh client. It asks NSM_CONNECT_TO (the node's nsmgr) for each
network service of NSM_NETWORK_SERVICES, a KERNEL interface in this process's network namespace
each, keeps the connections (refreshed, healed) until SIGINT or SIGTERM, then closes them.
With NSM_NETWORK_SERVICES_FILE the list may change while it runs: at SIGHUP and when the file
changes, it connects the services added and closes those removed, leaving the others alone.`

func main() {
	waitMain() // cmd-nsc wait: runs and exits there (wait.go)
	command(&config{}).Main()
}

func command(c *config) envconfig.Command {
	return envconfig.Command{Name: "cmd-nsc", About: about, Spec: c, Run: func(ctx context.Context) error {
		return run(ctx, c)
	}}
}

func run(ctx context.Context, c *config) error {
	// From the start, so that a SIGHUP while the first Requests go is a reload after them rather
	// than the end of the process (Go's default for SIGHUP).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	services, seen, err := c.services()
	if err != nil {
		return err
	}
	name := string(c.Name)
	id, err := c.Config.Load(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = id.Close() }()
	tokens, err := id.Tokens(name, c.MaxTokenLifetime)
	if err != nil {
		return err
	}
	// The client's background work (refresh, heal) and its connection to the nsmgr outlive ctx
	// (the signal) until every connection is closed.
	clientCtx, stopClient := context.WithCancel(context.WithoutCancel(ctx))
	defer stopClient()
	nsc := client.NewClient(clientCtx,
		client.WithName(name),
		client.WithClientURL(c.ConnectTo.URL),
		client.WithDialOptions(dial.WithDialTimeout(c.DialTimeout), dial.WithDialOptions(id.DialOptions()...)),
		client.WithTokenGenerator(tokens))

	s := &session{c: c, nsc: nsc, want: services}
	closeLeftovers(ctx, c, services, id, nsc)
	if err := removeLeftovers(ctx, services); err != nil {
		return err
	}
	for _, u := range services {
		if err := s.request(ctx, u); err != nil {
			closeErr := s.closeAll(ctx)
			if ctx.Err() != nil {
				return closeErr // stopped while requesting
			}
			return errors.Join(err, closeErr)
		}
	}

	s.follow(ctx, hup, seen)
	return s.closeAll(ctx)
}

// request is the first Request for u, from this process's network namespace.
func request(u *nsurl.URL, labels map[string]string) *networkservice.NetworkServiceRequest {
	all := maps.Clone(labels)
	if all == nil {
		all = map[string]string{}
	}
	maps.Copy(all, u.Labels)
	mech := kernel.ToMechanism(&networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM})
	mech.SetInterfaceName(u.Interface)
	mech.SetNetNSURL(kernelmech.NetNSURL())
	return &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{
			NetworkService: u.NetworkServiceName(),
			Labels:         all,
		},
		MechanismPreferences: []*networkservice.Mechanism{mech.Mechanism},
	}
}
