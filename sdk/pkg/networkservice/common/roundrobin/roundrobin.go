// Package roundrobin picks the endpoint for each new connection among discover's candidates, in
// turn per network service, and sends the Request to the next candidate when the chosen one
// cannot serve it.
//
// Before next, the request gets the chosen endpoint's name (network_service_endpoint_name) and
// the context its URL (clienturl), for dial, or for discoverforwarder, which keeps the name and
// sends the Request to a forwarder instead. The turn is smooth weighted round robin over
// discover.Weight: equal weights take the candidates in order; weights 3 and 1 give a, a, b, a
// and again. A Request whose connection already names one of the candidates (a refresh) goes
// to it first and does not move the turn on; a Request in state RESELECT_REQUESTED tries the
// endpoint the connection had last.
//
// Failover (TryEach): when the rest of the chain fails with a code that says the endpoint could
// not serve (Unavailable, Unknown, ResourceExhausted, Aborted, or DeadlineExceeded while the
// Request's own context lives), the Request goes to the next candidate, as a fresh copy of the
// request as it came (the last candidate gets the request itself, as any element's next does); any
// other error (InvalidArgument, PermissionDenied, NotFound, ...) and any error after the
// Request's context ended is returned at once. When no candidate accepts, the error names every
// endpoint tried, its URL and why it failed:
//
//	roundrobin: no endpoint of "icmp-responder" accepted the request; tried nse-a (tcp://127.0.0.1:5001): Unavailable: connection refused; nse-b (tcp://[fd00::2]:5001): Unavailable: connection refused
//
// Per connection, the endpoint that accepted is kept in metadata; Close sends to its URL (or,
// when there is none, after a restart, to the candidate discover found by name), forgets it,
// and always calls next.
//
// Place: after metadata and discover, before the element that uses the URL (dial, or
// discoverforwarder in an nsmgr).
package roundrobin

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/discover"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/hopurl"
)

// chosenKey holds the endpoint that accepted the connection.
var chosenKey = metadata.NewKey[*registry.NetworkServiceEndpoint]("roundrobin")

// NewServer returns the element.
func NewServer() networkservice.NetworkServiceServer {
	return &server{turns: map[string]map[string]int{}}
}

type server struct {
	mu sync.Mutex
	// turns holds, per network service, each endpoint's current weight in the smooth weighted
	// round robin: the endpoint with the highest goes next.
	turns map[string]map[string]int
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	service := req.GetConnection().GetNetworkService()
	nses := discover.Candidates(ctx)
	if len(nses) == 0 {
		return nil, status.Errorf(codes.Internal, "roundrobin: no candidate endpoints of %q in the context; put discover before roundrobin in the chain", service)
	}
	m := metadata.Server(ctx)
	last, _ := chosenKey.Load(m)
	none := fmt.Sprintf("roundrobin: no endpoint of %q", service)
	conn, nse, err := TryEach(ctx, req, none, s.order(ctx, req.GetConnection(), last, nses), setName)
	if err != nil {
		return nil, err
	}
	chosenKey.Store(m, nse)
	return conn, nil
}

func setName(req *networkservice.NetworkServiceRequest, nse *registry.NetworkServiceEndpoint) {
	req.GetConnection().NetworkServiceEndpointName = nse.GetName()
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	nse, ok := chosenKey.LoadAndDelete(metadata.Server(ctx))
	if !ok {
		if i := index(discover.Candidates(ctx), conn.GetNetworkServiceEndpointName()); i >= 0 {
			nse = discover.Candidates(ctx)[i]
		}
	}
	if u, err := url.Parse(nse.GetUrl()); nse != nil && err == nil {
		ctx = clienturl.WithClientURL(ctx, u)
	}
	return next.Server(ctx).Close(ctx, conn)
}

// order returns the candidates in the order to try them.
func (s *server) order(ctx context.Context, conn *networkservice.Connection, last *registry.NetworkServiceEndpoint, nses []*registry.NetworkServiceEndpoint) []*registry.NetworkServiceEndpoint {
	reselect := conn.GetState() == networkservice.State_RESELECT_REQUESTED
	first := -1
	if !reselect {
		first = index(nses, conn.GetNetworkServiceEndpointName())
	}
	if first < 0 {
		first = s.turn(ctx, conn.GetNetworkService(), nses)
	}
	ordered := append(slices.Clone(nses[first:]), nses[:first]...)
	if i := index(ordered, last.GetName()); reselect && i >= 0 {
		moved := ordered[i]
		ordered = append(slices.Delete(ordered, i, i+1), moved)
	}
	return ordered
}

// turn returns the index of the candidate whose turn it is, and moves the turn on.
func (s *server) turn(ctx context.Context, service string, nses []*registry.NetworkServiceEndpoint) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	before := s.turns[service]
	after := make(map[string]int, len(nses)) // endpoints gone from the candidates drop out
	total, best := 0, 0
	for i, nse := range nses {
		w := int(discover.Weight(ctx, nse.GetName()))
		total += w
		after[nse.GetName()] = before[nse.GetName()] + w
		if after[nse.GetName()] > after[nses[best].GetName()] {
			best = i
		}
	}
	after[nses[best].GetName()] -= total
	s.turns[service] = after
	return best
}

// index returns the index of the endpoint named name in nses, or -1 (also for no name).
func index(nses []*registry.NetworkServiceEndpoint, name string) int {
	if name == "" {
		return -1
	}
	return slices.IndexFunc(nses, func(nse *registry.NetworkServiceEndpoint) bool { return nse.GetName() == name })
}

// TryEach sends req through the rest of the chain with each of hops, in order, as the next hop
// (clienturl set to the hop's URL), until one accepts it; it returns the connection and the hop
// that accepted. Each try gets req as it came, which edit, if not nil, changes for its hop: a
// copy while another hop may follow, req itself for the last hop. A hop whose URL no next hop
// can have fails without being tried.
//
// TryEach moves on only when an error says the hop could not serve (see the package comment).
// When no hop accepts, the error reads "<none> accepted the request; tried <hop> (<url>):
// <code>: <message>; ...", where none begins with the caller's element name
// (`roundrobin: no endpoint of "icmp-responder"`). It keeps the last error's details; its code
// is that of the last error when that error stopped TryEach, else the one all hops failed
// with, else Unavailable.
func TryEach(ctx context.Context, req *networkservice.NetworkServiceRequest, none string, hops []*registry.NetworkServiceEndpoint,
	edit func(*networkservice.NetworkServiceRequest, *registry.NetworkServiceEndpoint)) (*networkservice.Connection, *registry.NetworkServiceEndpoint, error) {
	tried := make([]string, 0, len(hops))
	var shared codes.Code
	for i, hop := range hops {
		r := req
		if i < len(hops)-1 {
			r = req.Clone() // another hop may follow: each gets the request as it came
		}
		conn, err := try(ctx, r, hop, edit)
		if err == nil {
			return conn, hop, nil
		}
		st := statusOf(err)
		tried = append(tried, fmt.Sprintf("%s (%s): %s: %s", hop.GetName(), hop.GetUrl(), st.Code(), st.Message()))
		msg := fmt.Sprintf("%s accepted the request; tried %s", none, strings.Join(tried, "; "))
		left := len(hops) - i - 1
		switch {
		case ctx.Err() != nil:
			cause := status.FromContextError(ctx.Err())
			return nil, nil, withMessage(st, cause.Code(), fmt.Sprintf("%s; then the request's context ended (%s), %d left untried", msg, ctx.Err(), left))
		case !retriable(st.Code()):
			if left > 0 {
				msg = fmt.Sprintf("%s; not retried after %s, %d left untried", msg, st.Code(), left)
			}
			return nil, nil, withMessage(st, st.Code(), msg)
		case i == 0:
			shared = st.Code()
		case shared != st.Code():
			shared = codes.Unavailable
		}
		if left == 0 {
			return nil, nil, withMessage(st, shared, msg)
		}
	}
	return nil, nil, status.Errorf(codes.NotFound, "%s to try", none)
}

func try(ctx context.Context, req *networkservice.NetworkServiceRequest, hop *registry.NetworkServiceEndpoint,
	edit func(*networkservice.NetworkServiceRequest, *registry.NetworkServiceEndpoint)) (*networkservice.Connection, error) {
	u, err := url.Parse(hop.GetUrl())
	switch {
	case err != nil:
	case u.Scheme == fdpass.Scheme: // a socket passed by descriptor: dial.WithSockets reaches it
		err = fdpass.Check(hop.GetUrl())
	default:
		_, err = hopurl.Target(u)
	}
	if err != nil {
		// The hop cannot be reached, whatever the request: try the next one.
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if edit != nil {
		edit(req, hop)
	}
	ctx = clienturl.WithClientURL(ctx, u)
	return next.Server(ctx).Request(ctx, req)
}

// retriable tells whether an error of code c leaves hope for another hop.
func retriable(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.Unknown, codes.ResourceExhausted, codes.Aborted, codes.DeadlineExceeded:
		return true
	}
	return false
}

func statusOf(err error) *status.Status {
	if st, ok := status.FromError(err); ok {
		return st
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err)
	}
	return status.Convert(err)
}

// withMessage returns st's error with code c and message msg, keeping st's details.
func withMessage(st *status.Status, c codes.Code, msg string) error {
	p := st.Proto()
	p.Code, p.Message = int32(c), msg
	return status.ErrorProto(p)
}
