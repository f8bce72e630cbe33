// Package discover finds, for each Request, the network service it asks for and the endpoints
// that may serve it, and hands them to the elements after it: roundrobin picks one of the
// Candidates, discoverforwarder picks a forwarder by the labels of the Match.
//
// Before next, discover asks the registry (any NS and NSE element: a chain, a store, or a
// remote registry through registry/core/adapters):
//   - A connection that names its endpoint (network_service_endpoint_name: a refresh, or a hop
//     after the nsmgr) keeps it: the candidates are that endpoint alone, NotFound when it is no
//     longer registered or has expired. A Request in state RESELECT_REQUESTED (heal asking for
//     a new path) drops the name and selects anew. The network service is looked up too, for
//     the Match; that it is gone does not fail a connection that still has its endpoint.
//   - Otherwise the network service is found (NotFound when it is not registered, or when it
//     carries another payload than the connection asks for), its payload is set on the
//     connection, and its live endpoints (expiration_time not past by clock.FromContext) are
//     filtered by the service's matches.
//
// Matching follows NSM's, so that one NetworkService record means the same in both meshes:
//   - a service without matches: every endpoint is a candidate;
//   - matches are tried in order; one applies when its source_selector is contained in the
//     connection's labels (an empty selector always applies), and the first that applies
//     decides: its routes select, in route order and each endpoint once, the endpoints whose
//     labels for this service contain the route's destination_selector; the route's weight
//     goes with each endpoint it selected (Weight);
//   - a match that selects nothing passes on to the next one when it has fallthrough set;
//     otherwise it ends the search, except that a match with metadata and no routes (it only
//     steers the choice of forwarder) selects every endpoint;
//   - when no match applies there is no candidate: matches say who may reach what;
//   - selector values may be text/template templates that refer to the connection's labels:
//     {"nodeName": "{{.nodeName}}"} selects endpoints on the client's node. A template that
//     names a label the client does not have, or does more than refer to labels (see
//     Expand), stays as written, and so selects nothing.
//
// No candidate is NotFound, with a message that names the service, the client's labels, every
// match tried and why it selected nothing, and the endpoints' labels.
//
// Close always calls next. When the connection names its endpoint, discover looks it up (a
// failure is only logged) and hands it on as the only candidate, so that a Close can reach the
// endpoint even after a restart lost what the elements after discover remembered.
//
// Place: in a server chain before roundrobin and discoverforwarder; it keeps nothing per
// connection and needs neither begin nor metadata.
package discover

import (
	"context"
	"fmt"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/next"
	regnext "vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/log"
)

// found is what discover hands to the elements after it.
type found struct {
	ns      *registry.NetworkService
	match   *registry.Match
	nses    []*registry.NetworkServiceEndpoint
	weights map[string]uint32 // by endpoint name, from the route that selected it
}

type foundKey struct{}

var nothing found

func from(ctx context.Context) *found {
	if f, ok := ctx.Value(foundKey{}).(*found); ok {
		return f
	}
	return &nothing
}

// Candidates returns the endpoints discover found for the Request or Close being handled, in
// the order of the routes that selected them; nil before discover.
func Candidates(ctx context.Context) []*registry.NetworkServiceEndpoint { return from(ctx).nses }

// Match returns the match of the network service that chose the candidates: nil when the
// service has no matches, on Close, or before discover.
func Match(ctx context.Context) *registry.Match { return from(ctx).match }

// NetworkService returns the network service the Request asks for, as registered; nil on
// Close, before discover, or when a connection that names its endpoint outlived its service.
func NetworkService(ctx context.Context) *registry.NetworkService { return from(ctx).ns }

// Weight returns the share of new connections the named candidate should get relative to the
// others: the weight of the route that selected it, 1 when the route gives none or no route
// selected it.
func Weight(ctx context.Context, name string) uint32 { return max(from(ctx).weights[name], 1) }

// NewServer returns the element; ns and nse are the registry it asks.
func NewServer(ns regnext.NS, nse regnext.NSE) networkservice.NetworkServiceServer {
	if ns == nil || nse == nil {
		panic("discover: NewServer needs an NS and an NSE registry element, got nil")
	}
	return &server{ns: ns, nse: nse}
}

type server struct {
	ns  regnext.NS
	nse regnext.NSE
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn := req.GetConnection()
	if conn.GetNetworkService() == "" {
		return nil, status.Error(codes.InvalidArgument, "discover: the connection names no network service; set connection.network_service")
	}
	if conn.GetState() == networkservice.State_RESELECT_REQUESTED {
		conn.NetworkServiceEndpointName = ""
	}
	var f *found
	var err error
	if conn.GetNetworkServiceEndpointName() != "" {
		f, err = s.named(ctx, conn)
	} else {
		f, err = s.choose(ctx, conn)
	}
	if err != nil {
		return nil, err
	}
	ctx = context.WithValue(ctx, foundKey{}, f)
	return next.Server(ctx).Request(ctx, req)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if name := conn.GetNetworkServiceEndpointName(); name != "" {
		nse, err := s.endpoint(ctx, name)
		switch {
		case err != nil:
			log.FromContext(ctx).Debug("discover: looking up the endpoint to close failed; closing without it",
				"endpoint", name, "error", err)
		case nse != nil:
			ctx = context.WithValue(ctx, foundKey{}, &found{nses: []*registry.NetworkServiceEndpoint{nse}})
		}
	}
	return next.Server(ctx).Close(ctx, conn)
}

// named keeps the endpoint the connection names.
func (s *server) named(ctx context.Context, conn *networkservice.Connection) (*found, error) {
	name := conn.GetNetworkServiceEndpointName()
	nse, err := s.endpoint(ctx, name)
	if err != nil {
		return nil, registryError(err, "discover: find endpoint %q", name)
	}
	if nse == nil {
		return nil, status.Errorf(codes.NotFound,
			"discover: endpoint %q of connection %q is no longer registered; ask for a new one (heal does, with state RESELECT_REQUESTED)",
			name, conn.GetId())
	}
	if expired(ctx, nse) {
		return nil, status.Errorf(codes.NotFound,
			"discover: endpoint %q of connection %q expired at %s; ask for a new one (heal does, with state RESELECT_REQUESTED)",
			name, conn.GetId(), nse.GetExpirationTime().AsTime().Format("2006-01-02T15:04:05Z07:00"))
	}
	ns, err := s.service(ctx, conn)
	if err != nil {
		return nil, err
	}
	f := &found{ns: ns, nses: []*registry.NetworkServiceEndpoint{nse}}
	if ns != nil {
		f.match = matchOf(ns, conn.GetLabels(), nse)
	}
	return f, nil
}

// choose finds the candidates for a connection that names no endpoint.
func (s *server) choose(ctx context.Context, conn *networkservice.Connection) (*found, error) {
	ns, err := s.service(ctx, conn)
	if err != nil {
		return nil, err
	}
	if ns == nil {
		return nil, status.Errorf(codes.NotFound, "discover: network service %q not found; register it, or check the name", conn.GetNetworkService())
	}
	nses, err := Endpoints(ctx, s.nse, ns.GetName())
	if err != nil {
		return nil, registryError(err, "discover: find endpoints of %q", ns.GetName())
	}
	if len(nses) == 0 {
		return nil, status.Errorf(codes.NotFound,
			"discover: no endpoint of network service %q is registered (and not expired); start one, or wait for it to register", ns.GetName())
	}
	f, why := selectEndpoints(ns, conn.GetLabels(), nses)
	if len(f.nses) == 0 {
		return nil, status.Errorf(codes.NotFound, "discover: no endpoint of network service %q fits client labels %s: %s; endpoints: %s",
			ns.GetName(), FormatLabels(conn.GetLabels()), strings.Join(why, "; "), endpointLabels(ns.GetName(), nses))
	}
	return f, nil
}

// service returns the network service conn asks for, with its payload set on conn; nil when it
// is not registered.
func (s *server) service(ctx context.Context, conn *networkservice.Connection) (*registry.NetworkService, error) {
	name := conn.GetNetworkService()
	ns, err := byName(ctx, s.ns, &registry.NetworkService{Name: name})
	if err != nil {
		return nil, registryError(err, "discover: find network service %q", name)
	}
	if ns == nil || ns.GetPayload() == "" {
		return ns, nil
	}
	if want := conn.GetPayload(); want != "" && want != ns.GetPayload() {
		return nil, status.Errorf(codes.NotFound, "discover: network service %q carries payload %s, the connection asks for %s",
			name, ns.GetPayload(), want)
	}
	conn.Payload = ns.GetPayload()
	return ns, nil
}

// endpoint returns the endpoint registered as name, or nil.
func (s *server) endpoint(ctx context.Context, name string) (*registry.NetworkServiceEndpoint, error) {
	return byName(ctx, s.nse, &registry.NetworkServiceEndpoint{Name: name})
}

// byName returns the record of reg named as query, or the zero R.
func byName[R regnext.Record](ctx context.Context, reg regnext.Element[R], query R) (R, error) {
	var found R
	seen := false
	err := reg.Find(ctx, &regnext.Query[R]{Record: query}, func(ev *regnext.Event[R]) error {
		if !seen && !ev.Deleted && ev.Record.GetName() == query.GetName() {
			found, seen = ev.Record, true
		}
		return nil
	})
	return found, err
}

// Endpoints returns the endpoints registered in reg for service that have not expired (by
// clock.FromContext), in the registry's order. Errors are reg's, as they came.
func Endpoints(ctx context.Context, reg regnext.NSE, service string) ([]*registry.NetworkServiceEndpoint, error) {
	var live []*registry.NetworkServiceEndpoint
	query := &regnext.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{NetworkServiceNames: []string{service}}}
	err := reg.Find(ctx, query, func(ev *regnext.Event[*registry.NetworkServiceEndpoint]) error {
		if !ev.Deleted && !expired(ctx, ev.Record) {
			live = append(live, ev.Record)
		}
		return nil
	})
	return live, err
}

// registryError returns err of the registry with its code and details, its message after
// what discover was doing.
func registryError(err error, format string, args ...any) error {
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err) // Unknown for an error that is not the context's
	}
	p := st.Proto()
	p.Message = fmt.Sprintf(format, args...) + ": " + p.GetMessage()
	return status.ErrorProto(p)
}

func expired(ctx context.Context, nse *registry.NetworkServiceEndpoint) bool {
	t := nse.GetExpirationTime()
	return t != nil && !t.AsTime().After(clock.FromContext(ctx).Now())
}
