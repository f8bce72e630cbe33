// Command cmd-forwarder-kernel is vwire's kernel forwarder: the data plane agent of a node. Its
// node's nsmgr sends it each connection; it makes the client's vWire (a veth pair into the
// client's network namespace), and the endpoint's vWire on the same node or a tunnel to the
// forwarder of the endpoint's node (WireGuard for IP payload, VXLAN for Ethernet), and joins
// them in its own network namespace. Close removes all of it.
//
// It serves the forwarder chain (sdk-kernel/pkg/kernel/networkservice/chains/forwarder) on
// NSM_LISTEN_ON and registers itself with its nsmgr (NSM_CONNECT_TO) as an endpoint of the
// network service "forwarder" with NSM_LABELS, with register.Serve (sdk/pkg/registry/register),
// which refreshes the registration, makes it again after the nsmgr restarted, and unregisters
// before serving stops.
//
// A restart keeps the data plane. What a previous run left in its namespace (interfaces named
// "vw" + 13 base32 characters, the tc filters on them, and the policy rules naming them; see
// sdk-kernel/pkg/kernel/ifname) keeps passing traffic: the nsmgr's heal sends each connection
// again, and the forwarder adopts the vWires, VXLAN devices and cross-connects that are what the
// connection asks for, with no change to them (only wireguard-go devices, which died with the
// previous process, are made anew). NSM_ADOPT_GRACE after start it removes what no connection
// adopted (0: everything, at start). At SIGINT or SIGTERM it unregisters and stops serving, and
// leaves its vWires passing traffic for the forwarder that replaces it (an upgrade, a pod
// restarted), unless NSM_SWEEP_AT_EXIT=true; a forwarder removed for good is cleaned by a
// sweeper of its node (sdk-kernel/pkg/kernel/sweep).
//
// It works in the network namespace it runs in, which must be its own (a pod's, or one made with
// ip netns): for WireGuard it turns on IP forwarding and turns off the reverse-path filter there.
//
// Workloads' namespaces reach it as descriptors beside the calls over unix sockets (inode://
// URLs, NSM's grpcfd): the client's from its nsmgr, the endpoint's with the endpoint's answer.
// It opens only those; a file:// path is refused with PermissionDenied unless
// NSM_ALLOW_NETNS_PATHS=true, and one of its own (/proc/self, /proc/thread-self) always. It
// registers with its unix socket passed the same way, so the nsmgr reaches it from any mount
// namespace.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vxlan"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/wireguard"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/registry/register"
	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/hopurl"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/spiffe"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/chains/forwarder"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
	ksweep "vwire.dev/sdk-kernel/pkg/kernel/sweep"
	wgdevice "vwire.dev/sdk-kernel/pkg/kernel/wireguard"
)

type config struct {
	envconfig.Common
	spiffe.Config
	authorize.PolicyConfig
	Name             envconfig.Name   `default:"forwarder-kernel" split_words:"true" desc:"the forwarder's name: its registration and its segment of each connection's path; unique in the mesh"`
	ListenOn         envconfig.URL    `split_words:"true" desc:"where to serve, and the URL it registers (default: a socket in a new temporary directory)"`
	ConnectTo        envconfig.URL    `default:"unix:///var/lib/networkservicemesh/nsm.io.sock" split_words:"true" desc:"the node's nsmgr: where it registers and finds endpoints"`
	TunnelIP         tunnelIP         `split_words:"true" desc:"its underlay address, one of its namespace's, the source of its tunnels to other nodes; unset: connections within the node only"`
	VXLANPort        port             `default:"4789" split_words:"true" desc:"UDP port of VXLAN tunnels; the same on every node (0: 4789)"`
	RemoteMechanisms remoteMechanisms `default:"WIREGUARD,VXLAN" split_words:"true" desc:"the tunnels it offers and accepts, in the order it prefers them (WireGuard carries IP payload only)"`
	Labels           envconfig.Labels `default:"p2p=true" split_words:"true" desc:"its labels for the forwarder service, which the nsmgr picks forwarders by"`
	RegisterTimeout  time.Duration    `default:"15s" split_words:"true" desc:"how long the first registration may wait for the nsmgr to answer; also bounds the unregistration at exit"`
	MaxTokenLifetime time.Duration    `default:"10m" split_words:"true" desc:"lifetime of the tokens it signs"`
	DialTimeout      time.Duration    `default:"5s" split_words:"true" desc:"how long a Request waits for the next hop (an endpoint, or the nsmgr of another node) to accept a connection"`
	MonitorOperators spiffe.IDs       `split_words:"true" desc:"SPIFFE IDs that see every connection through MonitorConnections (an operator's tools, vwctl); any other caller sees only the connections it takes part in"`

	MechanismPriority      mechanismPriority `split_words:"true" desc:"NSM's order of mechanisms: the tunnels of NSM_REMOTE_MECHANISMS named here come first, in this order; other names are ignored"`
	NSName                 envconfig.Name    `default:"forwarder" desc:"the network service it registers under; nsmgrs find forwarders under forwarder only"`
	RegistryClientPolicies string            `split_words:"true" unused:"no client-side policies: a component trusts the answers of the registry it reached over mutual TLS" desc:"OPA policy files (.rego) and directories that check the nsmgr's registry answers"`
	envconfig.NotYet

	AdoptGrace  time.Duration `default:"10s" split_words:"true" desc:"how long after start the vWires a previous run left (a crash, an upgrade) wait for the nsmgr's heal to send their connections again, which adopts them as they stand; then what no connection adopted is removed (0: remove everything a previous run left at start, adopting nothing)"`
	SweepAtExit bool          `default:"false" split_words:"true" desc:"at SIGINT or SIGTERM, remove every vWire it made (for a forwarder removed for good with no sweeper on its node); by default they keep passing traffic for the forwarder that replaces it to adopt"`

	AllowNetnsPaths bool `default:"false" split_words:"true" desc:"let clients and endpoints name their network namespaces by file:// path, opened in this forwarder's mount namespace, besides passing them as descriptors (never /proc/self, /proc/thread-self or its own): only where every workload is trusted with the node's view, as in a mesh of ip netns namespaces"`
}

// mechanismPriority is a list of mechanism types, upper case.
type mechanismPriority []string

func (m *mechanismPriority) Decode(value string) error {
	var out mechanismPriority
	err := envconfig.DecodeList(value, func(item string) error {
		out = append(out, strings.ToUpper(item))
		return nil
	})
	*m = out
	return err
}

func (mechanismPriority) TypeName() string { return "mechanism list" }

// ordered is r with the tunnels that priority names first, in its order.
func (r remoteMechanisms) ordered(priority mechanismPriority) remoteMechanisms {
	out := make(remoteMechanisms, 0, len(r))
	for _, p := range priority {
		if slices.Contains(r, p) && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	for _, t := range r {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// tunnelIP is an optional unicast IP address.
type tunnelIP struct{ netip.Addr }

func (a *tunnelIP) Decode(value string) error {
	ip, err := netip.ParseAddr(strings.TrimSpace(value))
	switch {
	case err != nil:
		return errors.New("not an IP address; write 10.0.0.1 or fd00::1")
	case ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback():
		return errors.New("not a unicast address of an interface")
	}
	a.Addr = ip.Unmap()
	return nil
}

func (tunnelIP) TypeName() string { return "IP address" }

func (a tunnelIP) String() string {
	if !a.IsValid() {
		return ""
	}
	return a.Addr.String()
}

// port is a UDP port, 1..65535; 0, NSM's default, is VXLAN's standard port.
type port uint16

func (p *port) Decode(value string) error {
	n, err := strconv.ParseUint(strings.TrimSpace(value), 10, 16)
	if err != nil {
		return errors.New("not a UDP port 1..65535")
	}
	if n == 0 {
		n = 4789
	}
	*p = port(n)
	return nil
}

func (port) TypeName() string { return "port" }

// remoteMechanisms is a list of tunnel mechanism types, without repeats.
type remoteMechanisms []string

func (r *remoteMechanisms) Decode(value string) error {
	var out remoteMechanisms
	err := envconfig.DecodeList(value, func(item string) error {
		t := strings.ToUpper(item)
		if t != wireguard.MECHANISM && t != vxlan.MECHANISM {
			return fmt.Errorf("not a tunnel this forwarder makes; use %s or %s", wireguard.MECHANISM, vxlan.MECHANISM)
		}
		if slices.Contains(out, t) {
			return errors.New("given twice")
		}
		out = append(out, t)
		return nil
	})
	if err != nil {
		return err
	}
	*r = out
	return nil
}

func (remoteMechanisms) TypeName() string { return "mechanism list" }

func (r remoteMechanisms) String() string { return strings.Join(r, ",") }

const about = `cmd-forwarder-kernel: vwire's kernel forwarder, the data plane of a node. For each connection
its nsmgr sends it, it makes the client's vWire (a veth pair into the client's network
namespace) and the endpoint's vWire on this node, or a WireGuard (IP) or VXLAN (Ethernet) tunnel
to the forwarder of the endpoint's node, and joins them in its own network namespace, which must
be its own. It registers with NSM_CONNECT_TO. A restart keeps the data plane: it adopts the
vWires a previous run left as the nsmgr sends their connections again, and removes what no
connection adopted after NSM_ADOPT_GRACE; at SIGINT or SIGTERM it leaves its vWires to its
successor unless NSM_SWEEP_AT_EXIT=true.`

func main() { command(&config{}).Main() }

func command(c *config) envconfig.Command {
	return envconfig.Command{Name: "cmd-forwarder-kernel", About: about, Spec: c, Run: func(ctx context.Context) error {
		return run(ctx, c)
	}}
}

func run(ctx context.Context, c *config) error {
	if c.NSName != "forwarder" {
		return &envconfig.Error{Var: "NSM_NSNAME", Value: string(c.NSName),
			Problem: "nsmgrs find forwarders under the network service forwarder only; leave it unset"}
	}
	logger := log.FromContext(ctx)
	id, err := c.Config.Load(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = id.Close() }()
	fwd, err := nsfile.Open("file:///proc/self/ns/net")
	if err != nil {
		return err
	}
	defer func() { _ = fwd.Close() }()
	if c.TunnelIP.IsValid() {
		if err := onInterface(fwd, c.TunnelIP.Addr); err != nil {
			return err
		}
	} else {
		logger.Warn("NSM_TUNNEL_IP is not set: connections to endpoints on other nodes will fail")
	}
	if err := leftovers(ctx, fwd, c.AdoptGrace); err != nil {
		return err
	}
	defer func() {
		// Devices of wireguard-go live in this process: close them first, or their sockets stay.
		if err := wgdevice.CloseAll(); err != nil {
			log.FromContext(ctx).Warn("closing WireGuard devices at exit", "error", err)
		}
		if c.SweepAtExit {
			_ = sweep(ctx, fwd, "connections left at exit")
		}
	}()

	name := string(c.Name)
	tokens, err := id.Tokens(name, c.MaxTokenLifetime)
	if err != nil {
		return err
	}
	authz, err := c.PolicyConfig.Options(id)
	if err != nil {
		return err
	}
	opts := []forwarder.Option{
		forwarder.WithName(name),
		forwarder.WithVXLANPort(uint16(c.VXLANPort)),
		forwarder.WithRemoteMechanisms(c.RemoteMechanisms.ordered(c.MechanismPriority)...),
		forwarder.WithDialOptions(dial.WithDialTimeout(c.DialTimeout), dial.WithDialOptions(id.DialOptions()...)),
		forwarder.WithAuthorizeOptions(authz...),
		forwarder.WithMonitorOptions(monitor.WithOperators(c.MonitorOperators...)),
	}
	if c.TunnelIP.IsValid() {
		opts = append(opts, forwarder.WithTunnelIP(c.TunnelIP.Addr))
	}
	if c.AllowNetnsPaths {
		opts = append(opts, forwarder.WithNetNSPaths())
	}
	if listen := c.ListenOn.URL; listen != nil && listen.Scheme == hopurl.Unix {
		awaitPredecessor(listen.Path)
	}
	// The forwarder registers as an endpoint of the service "forwarder", with its unix socket
	// passed as a descriptor (as NSM's forwarders do): the nsmgr dials the socket it receives,
	// whatever mount namespace the path is in (a pod's).
	nse := &registry.NetworkServiceEndpoint{
		Name:                 name,
		NetworkServiceNames:  []string{"forwarder"},
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"forwarder": {Labels: c.Labels}},
	}
	var swept chan struct{} // closed when the sweep of what no connection adopted has ended
	err = register.Serve(ctx, c.ListenOn.URL, c.ConnectTo.URL, nse, func(serving context.Context, cc grpc.ClientConnInterface) (grpcserve.Registrar, error) {
		fwdChain, err := forwarder.NewServer(serving, tokens, cc, fwd, opts...)
		if err != nil {
			return nil, err
		}
		if c.AdoptGrace > 0 {
			swept = make(chan struct{})
			go func() {
				defer close(swept)
				sweepUnadopted(serving, fwd, c.AdoptGrace)
			}()
		}
		return fwdChain, nil
	},
		// One connection for the registration and the endpoint lookups; it comes back quickly to
		// an nsmgr that restarted, and calls wait for an nsmgr that is starting instead of failing.
		register.WithIdentity(id, tokens),
		register.WithDialOptions(grpc.WithDefaultCallOptions(grpc.WaitForReady(true))),
		register.WithTimeout(c.RegisterTimeout, "NSM_REGISTER_TIMEOUT"),
	)
	if swept != nil {
		<-swept // serving has ended, and with it the sweep: before fwd is closed
	}
	return err
}

// onInterface checks that ip is an address of an interface of namespace ns.
func onInterface(ns netns.NsHandle, ip netip.Addr) error {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return nil
		}
	}
	return fmt.Errorf("NSM_TUNNEL_IP: %q: no interface of this network namespace has it; give one of its addresses", ip)
}

// predecessorExit bounds how long a forwarder waits for its socket to be let go of by a
// predecessor that is still exiting.
const predecessorExit = 2 * time.Second

// awaitPredecessor waits, at most predecessorExit, until nothing accepts connections on the unix
// socket path. A forwarder started again right after a crash (now that adoption leaves it nothing
// to remove before serving) can reach its socket within milliseconds of the kill, while the kernel
// still tears the dead process down and its socket still takes connections; serving would then
// fail as if another forwarder served there. A socket that still accepts after the wait is
// another forwarder's, and serving says so.
func awaitPredecessor(path string) {
	deadline := time.Now().Add(predecessorExit)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("unix", path, 100*time.Millisecond)
		if err != nil {
			return
		}
		_ = c.Close()
		time.Sleep(10 * time.Millisecond) // the dead process's exit is not something to subscribe to
	}
}

// leftovers deals with what a previous run left in ns before serving: with a grace, it marks
// the interfaces for sweepUnadopted (the connections heal sends again adopt theirs) and removes
// only the sockets of wireguard-go devices, which died with that run; without one, it removes
// everything.
func leftovers(ctx context.Context, ns netns.NsHandle, grace time.Duration) error {
	if grace <= 0 {
		return sweep(ctx, ns, "a previous run left")
	}
	marked, err := ifname.Mark(ns)
	if len(marked) > 0 {
		log.FromContext(ctx).Info("interfaces a previous run left wait to be adopted", "interfaces", marked, "grace", grace)
	}
	if err != nil {
		return fmt.Errorf("mark the interfaces a previous run left: %w", err)
	}
	sockets, err := wgdevice.RemoveStale(ifname.Ours)
	if len(sockets) > 0 {
		log.FromContext(ctx).Info("removed WireGuard sockets a previous run left", "sockets", sockets)
	}
	if err != nil {
		return fmt.Errorf("remove WireGuard sockets a previous run left: %w", err)
	}
	return nil
}

// sweepUnadopted removes, grace after start, what a previous run left in ns that no connection
// adopted, unless ctx ends first.
func sweepUnadopted(ctx context.Context, ns netns.NsHandle, grace time.Duration) {
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return
	case <-timer.C:
	}
	removed, err := ifname.SweepMarked(ns)
	if len(removed) > 0 {
		log.FromContext(ctx).Info("removed interfaces a previous run left that no connection adopted", "interfaces", removed)
	}
	if err != nil {
		log.FromContext(ctx).Warn("removing interfaces a previous run left that no connection adopted", "error", err)
	}
}

// sweep removes the forwarder's objects from ns and the sockets of its dead WireGuard devices,
// and says so.
func sweep(ctx context.Context, ns netns.NsHandle, what string) error {
	removed, err := ksweep.Forwarder(ns)
	if len(removed.Interfaces) > 0 {
		log.FromContext(ctx).Info("removed interfaces "+what, "interfaces", removed.Interfaces)
	}
	if len(removed.Sockets) > 0 {
		log.FromContext(ctx).Info("removed WireGuard sockets "+what, "sockets", removed.Sockets)
	}
	if err != nil {
		return fmt.Errorf("remove what %s: %w", what, err)
	}
	return nil
}
