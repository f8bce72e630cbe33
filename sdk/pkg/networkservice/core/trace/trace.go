// Package trace wraps chain elements so that each Request and Close through an element gets an
// OpenTelemetry span named after the element's package and a debug log line saying what the
// element changed in the request before it called next, and in the reply after.
//
// Tracing is decided when a chain is built: chain.NewNetworkServiceServer wraps its elements only
// when Enabled() is true, so a chain built with tracing off runs exactly the elements it was
// given and pays nothing for this package. Programs call Enable at start, before building chains.
package trace

import (
	"context"
	"reflect"
	"strings"
	"sync/atomic"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/log"
)

var enabled atomic.Bool

// Enable turns tracing on or off for chains built afterwards.
func Enable(on bool) { enabled.Store(on) }

// Enabled reports whether chains built now get traced.
func Enabled() bool { return enabled.Load() }

// ElementName is the name spans and log lines use for an element: its package's name.
func ElementName(element any) string {
	t := reflect.TypeOf(element)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	p := t.PkgPath()
	return p[strings.LastIndex(p, "/")+1:]
}

const tracerName = "vwire.dev/sdk"

// step is one traced call: its span and the logger for its lines.
type step struct {
	ctx  context.Context
	span oteltrace.Span
	name string
}

func start(ctx context.Context, name, op string, conn *networkservice.Connection) step {
	ctx, span := otel.Tracer(tracerName).Start(ctx, name+"."+op,
		oteltrace.WithAttributes(attribute.String("connection.id", conn.GetId())))
	ctx = log.With(ctx, "element", name, "op", op, "connection", conn.GetId())
	return step{ctx: ctx, span: span, name: name}
}

// changed logs what differs between before and after, under what.
func (s step) changed(what string, before, after proto.Message) {
	diff := Diff(before, after)
	if diff == "" {
		return
	}
	s.span.AddEvent(what, oteltrace.WithAttributes(attribute.String("diff", diff)))
	log.FromContext(s.ctx).Debug(what, "diff", diff)
}

func (s step) end(err error) {
	if err != nil {
		s.span.RecordError(err)
		s.span.SetStatus(codes.Error, err.Error())
		log.FromContext(s.ctx).Debug("failed", "error", err)
	}
	s.span.End()
}

// NewNetworkServiceServer wraps s with tracing.
func NewNetworkServiceServer(s networkservice.NetworkServiceServer) networkservice.NetworkServiceServer {
	return &server{inner: s, name: ElementName(s)}
}

// NewNetworkServiceClient wraps c with tracing.
func NewNetworkServiceClient(c networkservice.NetworkServiceClient) networkservice.NetworkServiceClient {
	return &client{inner: c, name: ElementName(c)}
}

type server struct {
	inner networkservice.NetworkServiceServer
	name  string
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	st := start(ctx, s.name, "Request", req.GetConnection())
	link := &serverLink{step: st, after: next.Server(ctx), before: proto.Clone(req).(*networkservice.NetworkServiceRequest)}
	conn, err := s.inner.Request(next.WithServer(st.ctx, link), req)
	if err == nil && link.reply != nil {
		st.changed("reply changed", link.reply, conn)
	}
	st.end(err)
	return conn, err
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	st := start(ctx, s.name, "Close", conn)
	link := &serverLink{step: st, after: next.Server(ctx), before: &networkservice.NetworkServiceRequest{Connection: conn.Clone()}}
	r, err := s.inner.Close(next.WithServer(st.ctx, link), conn)
	st.end(err)
	return r, err
}

// serverLink stands between a traced element and the rest of the chain: it sees the request as
// the element passes it on, and the reply before the element sees it.
type serverLink struct {
	step
	after  networkservice.NetworkServiceServer
	before *networkservice.NetworkServiceRequest
	reply  *networkservice.Connection
}

func (l *serverLink) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	l.changed("request changed", l.before, req)
	conn, err := l.after.Request(ctx, req)
	if err == nil {
		l.reply = conn.Clone()
	}
	return conn, err
}

func (l *serverLink) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	l.changed("connection changed", l.before.GetConnection(), conn)
	return l.after.Close(ctx, conn)
}

type client struct {
	inner networkservice.NetworkServiceClient
	name  string
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	st := start(ctx, c.name, "Request", req.GetConnection())
	link := &clientLink{step: st, after: next.Client(ctx), before: proto.Clone(req).(*networkservice.NetworkServiceRequest)}
	conn, err := c.inner.Request(next.WithClient(st.ctx, link), req, opts...)
	if err == nil && link.reply != nil {
		st.changed("reply changed", link.reply, conn)
	}
	st.end(err)
	return conn, err
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	st := start(ctx, c.name, "Close", conn)
	link := &clientLink{step: st, after: next.Client(ctx), before: &networkservice.NetworkServiceRequest{Connection: conn.Clone()}}
	r, err := c.inner.Close(next.WithClient(st.ctx, link), conn, opts...)
	st.end(err)
	return r, err
}

type clientLink struct {
	step
	after  networkservice.NetworkServiceClient
	before *networkservice.NetworkServiceRequest
	reply  *networkservice.Connection
}

func (l *clientLink) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	l.changed("request changed", l.before, req)
	conn, err := l.after.Request(ctx, req, opts...)
	if err == nil {
		l.reply = conn.Clone()
	}
	return conn, err
}

func (l *clientLink) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	l.changed("connection changed", l.before.GetConnection(), conn)
	return l.after.Close(ctx, conn, opts...)
}
