// Package next links the elements of a chain: an element calls next.Server(ctx) (or
// next.Client(ctx)) to pass a Request or Close to the rest of its chain.
//
// The link travels in the context rather than in the element, so an element is written once and
// placed in any chain, and a chain nested inside another continues into the outer chain when its
// own last element calls next. At the end of the outermost chain, next returns a tail that
// answers Request with the request's connection and Close with an empty reply.
package next

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

type serverKey struct{}

type clientKey struct{}

type monitorKey struct{}

// Server returns the rest of the server chain that ctx was passed into.
func Server(ctx context.Context) networkservice.NetworkServiceServer {
	if s, ok := ctx.Value(serverKey{}).(networkservice.NetworkServiceServer); ok {
		return s
	}
	return tailServer{}
}

// Client returns the rest of the client chain that ctx was passed into.
func Client(ctx context.Context) networkservice.NetworkServiceClient {
	if c, ok := ctx.Value(clientKey{}).(networkservice.NetworkServiceClient); ok {
		return c
	}
	return tailClient{}
}

// MonitorConnectionServer returns the rest of the monitor chain that ctx was passed into.
func MonitorConnectionServer(ctx context.Context) networkservice.MonitorConnectionServer {
	if s, ok := ctx.Value(monitorKey{}).(networkservice.MonitorConnectionServer); ok {
		return s
	}
	return tailMonitor{}
}

// WithServer returns ctx in which next.Server is s: for a wrapper that stands between an element
// and the rest of its chain (tracing does).
func WithServer(ctx context.Context, s networkservice.NetworkServiceServer) context.Context {
	return context.WithValue(ctx, serverKey{}, s)
}

// WithClient is WithServer for client chains.
func WithClient(ctx context.Context, c networkservice.NetworkServiceClient) context.Context {
	return context.WithValue(ctx, clientKey{}, c)
}

// NewNetworkServiceServer links servers into one server; each calls the next with next.Server.
// With no servers it passes everything on: a do-nothing element for an optional slot.
func NewNetworkServiceServer(servers ...networkservice.NetworkServiceServer) networkservice.NetworkServiceServer {
	c := &serverChain{servers: servers, alone: make([]serverLink, len(servers)+1)}
	for i := range c.alone {
		c.alone[i] = serverLink{chain: c, index: i, after: tailServer{}}
	}
	return c
}

// NewNetworkServiceClient links clients into one client; each calls the next with next.Client.
func NewNetworkServiceClient(clients ...networkservice.NetworkServiceClient) networkservice.NetworkServiceClient {
	c := &clientChain{clients: clients, alone: make([]clientLink, len(clients)+1)}
	for i := range c.alone {
		c.alone[i] = clientLink{chain: c, index: i, after: tailClient{}}
	}
	return c
}

// NewMonitorConnectionServer links monitor servers into one; each calls the next with
// next.MonitorConnectionServer(stream.Context()).
func NewMonitorConnectionServer(servers ...networkservice.MonitorConnectionServer) networkservice.MonitorConnectionServer {
	return &monitorChain{servers: servers}
}

type serverChain struct {
	servers []networkservice.NetworkServiceServer
	alone   []serverLink // the links when nothing follows the chain, made once
}

// first returns the link to the chain's first element, followed by what follows the chain in ctx.
func (c *serverChain) first(ctx context.Context) *serverLink {
	if after, ok := ctx.Value(serverKey{}).(networkservice.NetworkServiceServer); ok {
		return &serverLink{chain: c, after: after}
	}
	return &c.alone[0]
}

func (c *serverChain) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return c.first(ctx).Request(ctx, req)
}

func (c *serverChain) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return c.first(ctx).Close(ctx, conn)
}

// serverLink is the position index in a chain; after is what follows the whole chain.
type serverLink struct {
	chain *serverChain
	index int
	after networkservice.NetworkServiceServer
}

func (l *serverLink) step(ctx context.Context) (networkservice.NetworkServiceServer, context.Context) {
	if l.index == len(l.chain.servers) {
		return l.after, WithServer(ctx, l.after)
	}
	following := &l.chain.alone[l.index+1]
	if l != &l.chain.alone[l.index] {
		following = &serverLink{chain: l.chain, index: l.index + 1, after: l.after}
	}
	return l.chain.servers[l.index], WithServer(ctx, following)
}

func (l *serverLink) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	s, ctx := l.step(ctx)
	return s.Request(ctx, req)
}

func (l *serverLink) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	s, ctx := l.step(ctx)
	return s.Close(ctx, conn)
}

type clientChain struct {
	clients []networkservice.NetworkServiceClient
	alone   []clientLink // the links when nothing follows the chain, made once
}

// first returns the link to the chain's first element, followed by what follows the chain in ctx.
func (c *clientChain) first(ctx context.Context) *clientLink {
	if after, ok := ctx.Value(clientKey{}).(networkservice.NetworkServiceClient); ok {
		return &clientLink{chain: c, after: after}
	}
	return &c.alone[0]
}

func (c *clientChain) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	return c.first(ctx).Request(ctx, req, opts...)
}

func (c *clientChain) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return c.first(ctx).Close(ctx, conn, opts...)
}

type clientLink struct {
	chain *clientChain
	index int
	after networkservice.NetworkServiceClient
}

func (l *clientLink) step(ctx context.Context) (networkservice.NetworkServiceClient, context.Context) {
	if l.index == len(l.chain.clients) {
		return l.after, WithClient(ctx, l.after)
	}
	following := &l.chain.alone[l.index+1]
	if l != &l.chain.alone[l.index] {
		following = &clientLink{chain: l.chain, index: l.index + 1, after: l.after}
	}
	return l.chain.clients[l.index], WithClient(ctx, following)
}

func (l *clientLink) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	c, ctx := l.step(ctx)
	return c.Request(ctx, req, opts...)
}

func (l *clientLink) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	c, ctx := l.step(ctx)
	return c.Close(ctx, conn, opts...)
}

type monitorChain struct {
	servers []networkservice.MonitorConnectionServer
}

func (c *monitorChain) MonitorConnections(sel *networkservice.MonitorScopeSelector, srv networkservice.MonitorConnection_MonitorConnectionsServer) error {
	return (&monitorLink{chain: c, after: MonitorConnectionServer(srv.Context())}).MonitorConnections(sel, srv)
}

type monitorLink struct {
	chain *monitorChain
	index int
	after networkservice.MonitorConnectionServer
}

func (l *monitorLink) MonitorConnections(sel *networkservice.MonitorScopeSelector, srv networkservice.MonitorConnection_MonitorConnectionsServer) error {
	if l.index == len(l.chain.servers) {
		return l.after.MonitorConnections(sel, WithStreamContext(srv, context.WithValue(srv.Context(), monitorKey{}, l.after)))
	}
	following := &monitorLink{chain: l.chain, index: l.index + 1, after: l.after}
	return l.chain.servers[l.index].MonitorConnections(sel, WithStreamContext(srv, context.WithValue(srv.Context(), monitorKey{}, following)))
}

// WithStreamContext returns srv with its Context replaced by ctx, for a monitor element that
// adds values to the stream's context before passing it on.
func WithStreamContext(srv networkservice.MonitorConnection_MonitorConnectionsServer, ctx context.Context) networkservice.MonitorConnection_MonitorConnectionsServer {
	return &streamWithContext{MonitorConnection_MonitorConnectionsServer: srv, ctx: ctx}
}

type streamWithContext struct {
	networkservice.MonitorConnection_MonitorConnectionsServer
	ctx context.Context
}

func (s *streamWithContext) Context() context.Context { return s.ctx }

type tailServer struct{}

func (tailServer) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return req.GetConnection(), nil
}

func (tailServer) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

type tailClient struct{}

func (tailClient) Request(_ context.Context, req *networkservice.NetworkServiceRequest, _ ...grpc.CallOption) (*networkservice.Connection, error) {
	return req.GetConnection(), nil
}

func (tailClient) Close(context.Context, *networkservice.Connection, ...grpc.CallOption) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

type tailMonitor struct{}

func (tailMonitor) MonitorConnections(*networkservice.MonitorScopeSelector, networkservice.MonitorConnection_MonitorConnectionsServer) error {
	return nil
}
