// Package discoverforwarder picks, in an nsmgr, the forwarder on this node that carries each
// connection, and sends the Request to it.
//
// Forwarders are endpoints registered for the forwarder service ("forwarder", or
// WithForwarderServiceName), alive by clock.FromContext; WithNodeName keeps those whose labels
// for that service say nodeName=<node>. One fits a connection when its labels for the service
// contain the labels of the match discover chose (discover.Match(ctx).Metadata.Labels, values
// may be templates over the connection's labels, as in discover). As in NSM, a match without
// metadata labels asks for {p2p=true}, and without a match (a service without matches) every
// forwarder fits. No forwarder fitting is NotFound, with what each one has:
//
//	discoverforwarder: no forwarder on node "node-1" fits match labels {p2mp=true}: fwd-a has {p2p=true}, fwd-b has {}
//
// Before next, the element sets the client URL to the forwarder's. The endpoint stays named in
// the connection (network_service_endpoint_name, set by roundrobin): the forwarder finds it by
// that name. A forwarder that cannot serve passes the Request to the next one that fits, as
// roundrobin.TryEach does, and the error names every forwarder tried and why.
//
// A refresh that finds no forwarder that fits while the forwarder its path names is not
// registered (this nsmgr restarted and its forwarders have not registered again, or that
// forwarder restarts) fails marked dial.HopAway, so that heal tries the same path again instead
// of tearing the vWire down.
//
// Per connection, the forwarder that accepted is kept in metadata: a refresh goes to it first
// while it is registered and fits; after a Request through it failed, or in state
// RESELECT_REQUESTED, it goes last. A connection the element has no memory of (the nsmgr
// restarted) starts with the forwarder named by the path segment after this hop's. Close goes
// to the remembered forwarder (after a restart, to the path's, looked up in the registry; when
// there is none, where the elements before sent it), forgets it, and always calls next.
//
// Place: in an nsmgr's server chain after metadata, discover and roundrobin, before connect.
package discoverforwarder

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/clientinfo"
	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/discover"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/roundrobin"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	regnext "vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/log"
)

// Option configures the element.
type Option func(*options)

type options struct {
	service string
	node    string
}

// WithForwarderServiceName sets the network service forwarders register for (default
// "forwarder").
func WithForwarderServiceName(name string) Option {
	if name == "" {
		panic("discoverforwarder: WithForwarderServiceName needs a name")
	}
	return func(o *options) { o.service = name }
}

// WithNodeName keeps only the forwarders whose labels for the forwarder service have
// nodeName=node (registry clientinfo sets it from NODE_NAME); default: every forwarder the
// registry has.
func WithNodeName(node string) Option {
	return func(o *options) { o.node = node }
}

// defaultLabels is what a match without metadata labels asks of a forwarder, as in NSM.
var defaultLabels = map[string]string{"p2p": "true"}

// choice is the forwarder a connection went through; failed: the last Request through it failed.
type choice struct {
	fwd    *registry.NetworkServiceEndpoint
	failed bool
}

var choiceKey = metadata.NewKey[choice]("discoverforwarder")

// NewServer returns the element; nse is the registry forwarders are registered in.
func NewServer(nse regnext.NSE, opts ...Option) networkservice.NetworkServiceServer {
	if nse == nil {
		panic("discoverforwarder: NewServer needs an NSE registry element, got nil")
	}
	o := options{service: "forwarder"}
	for _, opt := range opts {
		opt(&o)
	}
	s := &server{nse: nse, options: o, where: "on this node"}
	if o.node != "" {
		s.where = fmt.Sprintf("on node %q", o.node)
	}
	return s
}

type server struct {
	nse regnext.NSE
	options
	where string // "on node ..." for messages
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn := req.GetConnection()
	fwds, err := s.forwarders(ctx)
	if err != nil {
		return nil, err
	}
	want := wanted(discover.Match(ctx), conn.GetLabels())
	fit := slices.DeleteFunc(slices.Clone(fwds), func(fwd *registry.NetworkServiceEndpoint) bool { return !discover.Selects(want, s.labels(fwd)) })
	if len(fit) == 0 {
		err := s.noneFits(fwds, want)
		if name := conn.GetNextPathSegment().GetName(); name != "" && named(fwds, name) == nil {
			// The forwarder the connection went through has not registered (again) yet: this
			// nsmgr restarted, or the forwarder did. The vWire it built may still pass packets.
			err = dial.MarkHopAway(err)
		}
		return nil, err
	}
	m := metadata.Server(ctx)
	last, known := choiceKey.Load(m)
	resp, fwd, err := roundrobin.TryEach(ctx, req, "discoverforwarder: no forwarder "+s.where, order(conn, last, known, fit), nil)
	if err != nil {
		if known {
			choiceKey.Store(m, choice{fwd: last.fwd, failed: true})
		}
		return nil, err
	}
	choiceKey.Store(m, choice{fwd: fwd})
	return resp, nil
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	fwd := s.forClose(ctx, conn)
	if u, err := url.Parse(fwd.GetUrl()); fwd != nil && err == nil {
		ctx = clienturl.WithClientURL(ctx, u)
	}
	return next.Server(ctx).Close(ctx, conn)
}

// forClose returns the forwarder conn went through, or nil.
func (s *server) forClose(ctx context.Context, conn *networkservice.Connection) *registry.NetworkServiceEndpoint {
	if last, ok := choiceKey.LoadAndDelete(metadata.Server(ctx)); ok {
		return last.fwd
	}
	name := conn.GetNextPathSegment().GetName()
	if name == "" {
		return nil
	}
	fwds, err := s.forwarders(ctx)
	if err != nil {
		log.FromContext(ctx).Debug("discoverforwarder: looking up the forwarder to close failed; closing without it",
			"forwarder", name, "error", err)
	}
	return named(fwds, name)
}

// forwarders returns the live forwarders on this node.
func (s *server) forwarders(ctx context.Context) ([]*registry.NetworkServiceEndpoint, error) {
	fwds, err := discover.Endpoints(ctx, s.nse, s.service)
	if err != nil {
		st, ok := status.FromError(err)
		if !ok {
			st = status.FromContextError(err) // Unknown for an error that is not the context's
		}
		return nil, status.Errorf(st.Code(), "discoverforwarder: find forwarders (service %q): %s", s.service, st.Message())
	}
	if s.node == "" {
		return fwds, nil
	}
	return slices.DeleteFunc(fwds, func(fwd *registry.NetworkServiceEndpoint) bool {
		return s.labels(fwd)[clientinfo.NodeNameLabel] != s.node
	}), nil
}

func (s *server) labels(fwd *registry.NetworkServiceEndpoint) map[string]string {
	return fwd.GetNetworkServiceLabels()[s.service].GetLabels()
}

// wanted returns the labels a forwarder needs for a connection chosen by m.
func wanted(m *registry.Match, client map[string]string) map[string]string {
	switch {
	case m == nil:
		return nil
	case len(m.GetMetadata().GetLabels()) == 0:
		return defaultLabels
	}
	return discover.Expand(m.GetMetadata().GetLabels(), client)
}

// order returns the forwarders that fit in the order to try them.
func order(conn *networkservice.Connection, last choice, known bool, fit []*registry.NetworkServiceEndpoint) []*registry.NetworkServiceEndpoint {
	reselect := conn.GetState() == networkservice.State_RESELECT_REQUESTED
	name := conn.GetNextPathSegment().GetName()
	if known {
		name = last.fwd.GetName()
	}
	i := slices.IndexFunc(fit, func(fwd *registry.NetworkServiceEndpoint) bool { return fwd.GetName() == name })
	if name == "" || i < 0 {
		return fit
	}
	rest := slices.Delete(slices.Clone(fit), i, i+1)
	if reselect || last.failed {
		return append(rest, fit[i])
	}
	return append([]*registry.NetworkServiceEndpoint{fit[i]}, rest...)
}

func named(fwds []*registry.NetworkServiceEndpoint, name string) *registry.NetworkServiceEndpoint {
	if i := slices.IndexFunc(fwds, func(fwd *registry.NetworkServiceEndpoint) bool { return fwd.GetName() == name }); i >= 0 {
		return fwds[i]
	}
	return nil
}

// noneFits explains why no forwarder fits.
func (s *server) noneFits(fwds []*registry.NetworkServiceEndpoint, want map[string]string) error {
	if len(fwds) == 0 {
		return status.Errorf(codes.NotFound,
			"discoverforwarder: no forwarder is registered for service %q %s; is the forwarder running and registered?", s.service, s.where)
	}
	have := make([]string, 0, len(fwds))
	for _, fwd := range fwds {
		have = append(have, fwd.GetName()+" has "+discover.FormatLabels(s.labels(fwd)))
	}
	return status.Errorf(codes.NotFound, "discoverforwarder: no forwarder %s fits match labels %s: %s",
		s.where, discover.FormatLabels(want), strings.Join(have, ", "))
}
