// Package inspect asks a node's Network Service Manager, the hops behind it and the registry
// what they hold, for vwctl: the connections the nsmgr knows (its MonitorConnections' initial
// state), one connection's path as each hop it crossed sees it, and the registry's services and
// endpoints (Find, no watch).
//
// Why: a vWire that does not come up involves five components on up to two nodes; each hop's
// own view, side by side, shows where the path broke without reading their logs.
//
// What callers rely on: every call reads a snapshot and ends (no stream stays open); a hop that
// cannot be reached is reported in the result, not as the call's error, so a path is always
// shown whole; the call's error is kept for the nsmgr given to New, with its URL in the message.
// What a caller sees depends on its identity: over mutual TLS an nsmgr or forwarder shows every
// connection only to an operator (NSM_MONITOR_OPERATORS); otherwise only those the caller takes
// part in (sdk/pkg/networkservice/common/monitor).
package inspect

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	regrecvfd "vwire.dev/sdk/pkg/registry/common/recvfd"
	"vwire.dev/sdk/pkg/registry/core/adapters"
	regnext "vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
)

// Connection is one connection as a hop holds it, flattened for a person to read.
type Connection struct {
	ID       string `json:"id"`
	Client   string `json:"client"`
	Service  string `json:"service"`
	Endpoint string `json:"endpoint"`
	// Mechanism is how this hop reaches its previous hop (KERNEL for a local client, a tunnel
	// from another node), and Interface the interface it names there.
	Mechanism string `json:"mechanism"`
	Interface string `json:"interface,omitempty"`
	// NetNS is the kernel mechanism's network namespace (inode://dev/ino): the client's.
	NetNS         string    `json:"netns,omitempty"`
	ClientAddrs   []string  `json:"clientAddresses,omitempty"`
	EndpointAddrs []string  `json:"endpointAddresses,omitempty"`
	State         string    `json:"state"`
	Expires       time.Time `json:"expires"`
	Path          []string  `json:"path"`
	PathIndex     int       `json:"pathIndex"`
}

// FromAPI flattens c, as the hop at its path index holds it.
func FromAPI(c *networkservice.Connection) Connection {
	segs := c.GetPath().GetPathSegments()
	out := Connection{
		ID:            c.GetId(),
		Service:       c.GetNetworkService(),
		Endpoint:      c.GetNetworkServiceEndpointName(),
		Mechanism:     c.GetMechanism().GetType(),
		ClientAddrs:   c.GetContext().GetIpContext().GetSrcIpAddrs(),
		EndpointAddrs: c.GetContext().GetIpContext().GetDstIpAddrs(),
		State:         c.GetState().String(),
		PathIndex:     int(c.GetPath().GetIndex()),
	}
	if m := kernel.ToMechanism(c.GetMechanism()); m != nil {
		out.Interface = m.GetInterfaceName()
		out.NetNS = m.GetNetNSURL()
	}
	for _, seg := range segs {
		out.Path = append(out.Path, seg.GetName())
	}
	if len(segs) > 0 {
		out.Client = segs[0].GetName()
	}
	if out.PathIndex < len(segs) {
		out.Expires = segs[out.PathIndex].GetExpires().AsTime()
	}
	return out
}

// Inspector reaches a node's nsmgr, and through it the registry and the hops of a path.
type Inspector struct {
	nsmgr    *url.URL
	registry *url.URL
	dialOpts []grpc.DialOption
	sockets  *fdpass.Sockets // forwarders' sockets, passed by descriptor with a Find's results
	passed   []string        // the inode URLs of those sockets, to close them
	conns    []*grpc.ClientConn
}

// New returns an Inspector of the nsmgr at nsmgr and the registry at reg (nil: the nsmgr's own
// registry service, which answers from the mesh's registry and knows its node's forwarders).
// dialOpts carry the caller's identity (transport credentials, tokens); Close releases what it
// dialed.
func New(nsmgr, reg *url.URL, dialOpts ...grpc.DialOption) *Inspector {
	if reg == nil {
		reg = nsmgr
	}
	return &Inspector{nsmgr: nsmgr, registry: reg, dialOpts: dialOpts, sockets: fdpass.NewSockets()}
}

// Close closes every connection the Inspector made.
func (in *Inspector) Close() {
	for _, cc := range in.conns {
		_ = cc.Close()
	}
	in.conns = nil
	for _, u := range in.passed {
		in.sockets.Forget(u)
	}
	in.passed = nil
}

func (in *Inspector) dial(u *url.URL) (*grpc.ClientConn, error) {
	if u.Scheme == fdpass.Scheme {
		// A socket passed by descriptor: dialed through it, whatever its path.
		opts := append([]grpc.DialOption{grpc.WithTransportCredentials(fdpass.Credentials(nil))}, in.dialOpts...)
		cc, err := grpc.NewClient("passthrough:///"+u.String(), append(opts, in.sockets.Dialer(u.String()))...)
		if err != nil {
			return nil, err
		}
		in.conns = append(in.conns, cc)
		return cc, nil
	}
	cc, err := regclient.Dial(u, in.dialOpts...)
	if err != nil {
		return nil, err
	}
	in.conns = append(in.conns, cc)
	return cc, nil
}

// UnreachableError is the error of a call to the nsmgr or registry given to New that failed:
// it names which and its URL.
type UnreachableError struct {
	What string // "nsmgr" or "registry"
	URL  string
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%s at %s: %v", e.What, e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Connections returns every connection the nsmgr shows its caller, ordered by client, then
// service, then ID.
func (in *Inspector) Connections(ctx context.Context) ([]Connection, error) {
	conns, err := in.monitor(ctx, in.nsmgr)
	if err != nil {
		return nil, &UnreachableError{What: "nsmgr", URL: in.nsmgr.String(), Err: err}
	}
	out := make([]Connection, 0, len(conns))
	for _, c := range conns {
		out = append(out, FromAPI(c))
	}
	slices.SortFunc(out, func(a, b Connection) int {
		return strings.Compare(a.Client+"\x00"+a.Service+"\x00"+a.ID, b.Client+"\x00"+b.Service+"\x00"+b.ID)
	})
	return out, nil
}

// monitor returns the connections the MonitorConnections service at u shows: its initial state.
func (in *Inspector) monitor(ctx context.Context, u *url.URL) (map[string]*networkservice.Connection, error) {
	cc, err := in.dial(u)
	if err != nil {
		return nil, err
	}
	return monitor.Snapshot(ctx, cc, &networkservice.MonitorScopeSelector{})
}

// Services returns the registry's network services, by name.
func (in *Inspector) Services(ctx context.Context) ([]*registry.NetworkService, error) {
	cc, err := in.dial(in.registry)
	if err != nil {
		return nil, &UnreachableError{What: "registry", URL: in.registry.String(), Err: err}
	}
	var out []*registry.NetworkService
	err = adapters.NSClient(registry.NewNetworkServiceRegistryClient(cc)).Find(ctx,
		&regnext.Query[*registry.NetworkService]{Record: &registry.NetworkService{}},
		func(ev *regnext.Event[*registry.NetworkService]) error {
			out = append(out, ev.Record)
			return nil
		})
	if err != nil {
		return nil, &UnreachableError{What: "registry", URL: in.registry.String(), Err: err}
	}
	slices.SortFunc(out, func(a, b *registry.NetworkService) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, nil
}

// forwarderService is the network service forwarders register for, at their nsmgr only: an
// nsmgr answers a query for it, and only for it, from its node's forwarders.
const forwarderService = "forwarder"

// Endpoints returns the registry's endpoints (and, when the registry is an nsmgr, its node's
// forwarders), by name.
func (in *Inspector) Endpoints(ctx context.Context) ([]*registry.NetworkServiceEndpoint, error) {
	var out []*registry.NetworkServiceEndpoint
	for _, template := range []*registry.NetworkServiceEndpoint{{}, {NetworkServiceNames: []string{forwarderService}}} {
		found, err := in.findEndpoints(ctx, in.registry, template)
		if err != nil {
			return nil, &UnreachableError{What: "registry", URL: in.registry.String(), Err: err}
		}
		for _, nse := range found {
			if !slices.ContainsFunc(out, func(e *registry.NetworkServiceEndpoint) bool { return e.GetName() == nse.GetName() }) {
				out = append(out, nse)
			}
		}
	}
	slices.SortFunc(out, func(a, b *registry.NetworkServiceEndpoint) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, nil
}

// findEndpoints finds the endpoints matching template at the registry service at u, keeping the
// sockets of those that registered by descriptor.
func (in *Inspector) findEndpoints(ctx context.Context, u *url.URL, template *registry.NetworkServiceEndpoint) ([]*registry.NetworkServiceEndpoint, error) {
	cc, err := in.dial(u)
	if err != nil {
		return nil, err
	}
	var out []*registry.NetworkServiceEndpoint
	find := adapters.NSEClient(registry.NewNetworkServiceEndpointRegistryClient(cc))
	if u.Scheme == "unix" { // descriptors travel over unix sockets only
		find = regnext.Chain(regrecvfd.NewClient(in.sockets), find)
	}
	err = find.Find(ctx, &regnext.Query[*registry.NetworkServiceEndpoint]{Record: template},
		func(ev *regnext.Event[*registry.NetworkServiceEndpoint]) error {
			if u := ev.Record.GetUrl(); fdpass.IsURL(u) && in.sockets.Get(u) != nil {
				in.passed = append(in.passed, u)
			}
			out = append(out, ev.Record)
			return nil
		})
	return out, err
}

// Hop states beyond the API's UP and DOWN.
const (
	Missing     = "MISSING"     // the hop answered and does not hold the connection
	Unreachable = "UNREACHABLE" // the hop could not be asked
	NotAsked    = "NOT ASKED"   // a client, a hop before the nsmgr asked, or one reachable only on another node
	// NotShown is an endpoint that answered without the connection: endpoints need not name
	// vwctl an operator, so this says nothing of the connection.
	NotShown = "NOT SHOWN"
)

// Hop is one hop of a path and what it says of the connection.
type Hop struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	Role  string `json:"role"` // client, nsmgr, forwarder, endpoint
	URL   string `json:"url,omitempty"`
	State string `json:"state"` // UP, DOWN, or one of Missing, Unreachable, NotAsked, NotShown
	// View is the connection as the hop holds it; nil unless the hop holds it.
	View *Connection `json:"view,omitempty"`
	// Error says why the hop could not be asked or what it lacks.
	Error string `json:"error,omitempty"`
}

// Path is a connection's path as each of its hops sees it.
type Path struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Hops    []Hop  `json:"hops"`
	// Broken is the index of the hop where the path breaks, -1 when every hop asked holds the
	// connection UP: the first hop that cannot be reached or does not hold it; else the last
	// hop that holds it DOWN (a hop reports DOWN what broke after it, so the deepest is where it
	// broke).
	Broken int `json:"broken"`
}

// ErrNotFound is the error of PathOf for a connection the nsmgr does not show.
var ErrNotFound = errors.New("no such connection")

// PathOf returns the path of the connection id (the ID the nsmgr lists, or any of its path
// segments' IDs) with each hop's view. The nsmgr's own hop is asked at its URL; the forwarder
// and the endpoint after an nsmgr are found, by name, in that nsmgr's registry service (their
// sockets may come by descriptor); the nsmgr of the endpoint's node is at the URL the endpoint
// registered with, as the registry shows it. Clients and hops before the asked nsmgr are not
// asked.
func (in *Inspector) PathOf(ctx context.Context, id string) (*Path, error) {
	conns, err := in.monitor(ctx, in.nsmgr)
	if err != nil {
		return nil, &UnreachableError{What: "nsmgr", URL: in.nsmgr.String(), Err: err}
	}
	var own *networkservice.Connection
	for _, c := range conns {
		if c.GetId() == id || slices.ContainsFunc(c.GetPath().GetPathSegments(), func(s *networkservice.PathSegment) bool { return s.GetId() == id }) {
			own = c
			break
		}
	}
	if own == nil {
		return nil, fmt.Errorf("%w %q at the nsmgr at %s (vwctl connections lists those it shows)", ErrNotFound, id, in.nsmgr)
	}
	segs := own.GetPath().GetPathSegments()
	p := &Path{ID: own.GetId(), Service: own.GetNetworkService(), Broken: -1}
	self := int(own.GetPath().GetIndex())
	var prevURL *url.URL // the URL of the last nsmgr asked, whose registry knows its node's hops
	for i, seg := range segs {
		h := Hop{Index: i, Name: seg.GetName(), Role: role(i, len(segs)), State: NotAsked}
		var u *url.URL
		switch {
		case i == self:
			u = in.nsmgr
		case i < self || h.Role == "client" || (prevURL == nil && h.Role != "nsmgr"):
		case h.Role == "forwarder":
			u, err = in.registered(ctx, prevURL, &registry.NetworkServiceEndpoint{Name: h.Name, NetworkServiceNames: []string{forwarderService}}, "its nsmgr")
		case h.Role == "endpoint":
			u, err = in.registered(ctx, prevURL, &registry.NetworkServiceEndpoint{Name: h.Name}, "its nsmgr")
		default: // the nsmgr of the endpoint's node, whose URL the endpoint registered with
			name := own.GetNetworkServiceEndpointName()
			u, err = in.registered(ctx, in.registry, &registry.NetworkServiceEndpoint{Name: name}, "the registry")
			if err != nil {
				err = fmt.Errorf("the URL of %s is that of its endpoint %s: %w", h.Name, name, err)
			}
		}
		var elsewhere *elsewhereError
		switch {
		case errors.As(err, &elsewhere):
			h.Error = err.Error() // not asked: no break here
			err = nil
		case err != nil:
			h.State, h.Error = Unreachable, err.Error()
			err = nil
		case u != nil:
			h.URL = u.String()
			in.ask(ctx, &h, u, seg.GetId())
		}
		if h.Role == "nsmgr" {
			prevURL = u
		}
		p.Hops = append(p.Hops, h)
	}
	p.Broken = broken(p.Hops)
	return p, nil
}

// ask fills h with what the hop at u holds under the segment ID segID.
func (in *Inspector) ask(ctx context.Context, h *Hop, u *url.URL, segID string) {
	conns, err := in.monitor(ctx, u)
	if err != nil {
		h.State, h.Error = Unreachable, err.Error()
		return
	}
	c, ok := conns[segID]
	switch {
	case !ok && h.Role == "endpoint":
		h.State = NotShown
		return
	case !ok:
		h.State, h.Error = Missing, fmt.Sprintf("%s does not hold the connection %s (it shows %d connections to this caller)", h.Name, segID, len(conns))
		return
	}
	v := FromAPI(c)
	h.View, h.State = &v, v.State
}

// registered returns the URL of the record template names, as the registry service at reg
// (called who in errors) has it.
func (in *Inspector) registered(ctx context.Context, reg *url.URL, template *registry.NetworkServiceEndpoint, who string) (*url.URL, error) {
	found, err := in.findEndpoints(ctx, reg, template)
	if err != nil {
		return nil, fmt.Errorf("find %s in the registry of %s at %s: %w", template.GetName(), who, reg, err)
	}
	for _, nse := range found {
		if nse.GetName() != template.GetName() {
			continue
		}
		if u := nse.GetUrl(); fdpass.IsURL(u) && in.sockets.Get(u) == nil {
			return nil, &elsewhereError{name: nse.GetName(), nsmgr: reg}
		}
		return url.Parse(nse.GetUrl())
	}
	return nil, fmt.Errorf("%s is not registered with %s at %s: it stopped, or was unregistered as gone", template.GetName(), who, reg)
}

// elsewhereError says that a hop is reachable only on its own node: it registered its socket by
// descriptor with an nsmgr reached over TCP, over which no descriptor travels.
type elsewhereError struct {
	name  string
	nsmgr *url.URL
}

func (e *elsewhereError) Error() string {
	return fmt.Sprintf("%s is reachable only on its node (its nsmgr at %s holds its socket): run vwctl path there, with -nsmgr set to that nsmgr's unix socket (kubectl vwire --node <its node> path <ID>)", e.name, e.nsmgr)
}

// role names what the hop at index i of a path of n segments is: a path runs client, nsmgr,
// forwarder, (nsmgr, forwarder,) endpoint.
func role(i, n int) string {
	switch {
	case i == 0:
		return "client"
	case i == n-1:
		return "endpoint"
	case i%2 == 1:
		return "nsmgr"
	default:
		return "forwarder"
	}
}

// broken returns the index of the hop where the path breaks (see Path.Broken).
func broken(hops []Hop) int {
	for _, h := range hops {
		if h.State == Missing || h.State == Unreachable {
			return h.Index
		}
	}
	for i := len(hops) - 1; i >= 0; i-- {
		if hops[i].State == networkservice.State_DOWN.String() {
			return i
		}
	}
	return -1
}
