// Package mechanisms routes each Request and Close to the part of a chain that handles the
// connection's mechanism (KERNEL, MEMIF, VXLAN, ...): one sub-chain per mechanism type, of
// which exactly one runs per event.
//
// A forwarder or an endpoint wires a kernel interface differently from a VXLAN tunnel; with this
// element each way is a sub-chain of its own, and the choice is made once, here. A sub-chain
// continues into the rest of the chain after this element when it calls next.
//
// The server chooses: on a connection that already has a mechanism (a refresh) it keeps that
// mechanism's type; otherwise it takes the first of the request's MechanismPreferences whose
// type it supports and sets a copy of it as the connection's mechanism before the sub-chain
// runs. The client does not choose (the server at the next hop does): it runs the sub-chain of
// the connection's mechanism on a refresh, else of the first preference it supports, and leaves
// the request as it is.
//
// Guarantees: an offer with no supported type, or a refresh whose mechanism type is not
// supported, fails with InvalidArgument naming what was offered and what is supported, before
// anything runs. Close runs the sub-chain of the connection's mechanism type, and passes a
// connection with no or an unknown mechanism on to next, so cleanup always proceeds.
// Unlike NSM's, neither side tries further preferences when the chosen sub-chain fails: the
// error is returned as it is.
package mechanisms

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// NewServer returns the element that runs byType[t] for connections of mechanism type t.
func NewServer(byType map[string]networkservice.NetworkServiceServer) networkservice.NetworkServiceServer {
	r := newRouter("NewServer", "this endpoint", byType, func(s networkservice.NetworkServiceServer) networkservice.NetworkServiceServer {
		return chain.NewNetworkServiceServer(s)
	})
	return &server{r}
}

// NewClient returns the element that runs byType[t] for connections whose mechanism (on a
// refresh) or first supported preference (on a first Request) is of type t.
func NewClient(byType map[string]networkservice.NetworkServiceClient) networkservice.NetworkServiceClient {
	r := newRouter("NewClient", "this client", byType, func(c networkservice.NetworkServiceClient) networkservice.NetworkServiceClient {
		return chain.NewNetworkServiceClient(c)
	})
	return &client{r}
}

// router is the choice both sides make, over their kind of sub-chain E.
type router[E any] struct {
	byType    map[string]E
	who       string // "this endpoint", "this client": who supports, in error messages
	supported string // the supported types, sorted, for error messages
}

func newRouter[E any](ctor, who string, byType map[string]E, wrap func(E) E) router[E] {
	if len(byType) == 0 {
		panic("mechanisms: " + ctor + " needs at least one mechanism")
	}
	r := router[E]{byType: make(map[string]E, len(byType)), who: who}
	for t, e := range byType {
		if any(e) == nil {
			panic(fmt.Sprintf("mechanisms: %s got a nil element for %q", ctor, t))
		}
		r.byType[t] = wrap(e)
	}
	r.supported = strings.Join(slices.Sorted(maps.Keys(byType)), ", ")
	return r
}

// choose returns the sub-chain for a Request and, on a first Request, the preference it chose.
func (r *router[E]) choose(req *networkservice.NetworkServiceRequest) (E, *networkservice.Mechanism, error) {
	if m := req.GetConnection().GetMechanism(); m != nil {
		if e, ok := r.byType[m.GetType()]; ok {
			return e, nil, nil
		}
		var zero E
		return zero, nil, status.Errorf(codes.InvalidArgument,
			"mechanisms: the connection's mechanism %s is not supported; %s supports %s", m.GetType(), r.who, r.supported)
	}
	for _, m := range req.GetMechanismPreferences() {
		if e, ok := r.byType[m.GetType()]; ok {
			return e, m, nil
		}
	}
	var zero E
	offered := make([]string, 0, len(req.GetMechanismPreferences()))
	for _, m := range req.GetMechanismPreferences() {
		offered = append(offered, m.GetType())
	}
	if len(offered) == 0 {
		return zero, nil, status.Errorf(codes.InvalidArgument,
			"mechanisms: the request offers no mechanism; add a mechanism preference (%s supports %s)", r.who, r.supported)
	}
	return zero, nil, status.Errorf(codes.InvalidArgument,
		"mechanisms: none of the offered mechanisms %v is supported; %s supports %s", offered, r.who, r.supported)
}

// forClose returns the sub-chain for closing conn, if its mechanism type has one.
func (r *router[E]) forClose(conn *networkservice.Connection) (E, bool) {
	e, ok := r.byType[conn.GetMechanism().GetType()]
	return e, ok
}

type server struct {
	router[networkservice.NetworkServiceServer]
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	sub, chosen, err := s.choose(req)
	if err != nil {
		return nil, err
	}
	if chosen != nil {
		if req.GetConnection() == nil {
			req.Connection = &networkservice.Connection{}
		}
		req.GetConnection().Mechanism = chosen.Clone()
	}
	return sub.Request(ctx, req)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if sub, ok := s.forClose(conn); ok {
		return sub.Close(ctx, conn)
	}
	return next.Server(ctx).Close(ctx, conn)
}

type client struct {
	router[networkservice.NetworkServiceClient]
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	sub, _, err := c.choose(req)
	if err != nil {
		return nil, err
	}
	return sub.Request(ctx, req, opts...)
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	if sub, ok := c.forClose(conn); ok {
		return sub.Close(ctx, conn, opts...)
	}
	return next.Client(ctx).Close(ctx, conn, opts...)
}
