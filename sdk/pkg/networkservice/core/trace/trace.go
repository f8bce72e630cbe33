// Package trace wraps chain elements so that each Request and Close through an element gets an
// OpenTelemetry span named after the element's package and, at NSM_LOG_LEVEL=TRACE, a debug log
// line saying what the element changed in the request before it called next, and in the reply
// after.
//
// Tracing is decided when a chain is built: chain.NewNetworkServiceServer wraps its elements only
// when Enabled() is true, so a chain built with tracing off runs exactly the elements it was
// given and pays nothing for this package. Programs call Configure (or Enable) at start, before
// building chains; sdk/pkg/tools/envconfig does it for every command: spans when traces are
// exported (sdk/pkg/tools/telemetry), change lines at TRACE.
//
// A failed call marks where its error began: the span of the element that made the error has
// the attribute vwire.error.origin=true, the error recorded as an event and its message as the
// status; each element it passed through on its way out has vwire.error.origin=false and the
// status "passed on: ...". An element that returns what the rest of its chain, or the next hop
// over gRPC (PassedOn, called by sdk/pkg/tools/telemetry's client interceptors, at a stream's
// failed read too), returned to it, wraps it with %w, or repeats its message within its own (a
// status of the same code, annotated), passed it on; any other error is its own. The registry's
// chains (sdk/pkg/registry/core/next) use the same Step.
package trace

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/log"
)

var spans, changes atomic.Bool

// Configure says what chains built afterwards record: a span per element call (withSpans), and
// a debug line per element saying what it changed (withChanges).
func Configure(withSpans, withChanges bool) {
	spans.Store(withSpans)
	changes.Store(withChanges)
}

// Enable turns both spans and change lines on or off for chains built afterwards.
func Enable(on bool) { Configure(on, on) }

// Enabled reports whether chains built now get wrapped.
func Enabled() bool { return spans.Load() || changes.Load() }

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

// OriginKey is the span attribute that says whether an element's error began there.
const OriginKey = attribute.Key("vwire.error.origin")

// Step is one traced call of an element: its span, and its logger when change lines are on.
type Step struct {
	Ctx     context.Context // the call's context, carrying the span (and the step, for PassedOn)
	span    oteltrace.Span
	changes bool
	// passed is what the rest of the chain or the next hop returned to the element; atomic, as a
	// stream the element opened may be read on another goroutine (telemetry's interceptors).
	passed atomic.Pointer[error]
}

type stepKey struct{}

// Start begins a step of the element named name doing op (Request, Close, Register...) for the
// object id (a connection ID, a record's name).
func Start(ctx context.Context, name, op, id string) *Step {
	s := &Step{changes: changes.Load()}
	ctx, s.span = otel.Tracer(tracerName).Start(ctx, name+"."+op, oteltrace.WithAttributes(attribute.String("vwire.id", id)))
	if s.changes {
		ctx = log.With(ctx, "element", name, "op", op, "id", id)
	}
	s.Ctx = context.WithValue(ctx, stepKey{}, s)
	return s
}

// PassedOn tells the innermost step in ctx that err came from what follows its element (the
// next hop, for the element that made a gRPC call), so that the step does not count it as its
// own when the element returns it.
func PassedOn(ctx context.Context, err error) {
	if s, ok := ctx.Value(stepKey{}).(*Step); ok {
		s.PassedOn(err)
	}
}

// PassedOn tells s that err (nil for none) is what came back from what follows its element.
func (s *Step) PassedOn(err error) {
	if err != nil {
		s.passed.Store(&err)
	}
}

// Changed logs what differs between before and after, under what, when change lines are on.
func (s *Step) Changed(what string, before, after proto.Message) {
	if !s.changes {
		return
	}
	if diff := Diff(before, after); diff != "" {
		s.span.AddEvent(what, oteltrace.WithAttributes(attribute.String("diff", diff)))
		log.FromContext(s.Ctx).Debug(what, "diff", diff)
	}
}

// End ends the step with the element's result.
func (s *Step) End(err error) {
	if err != nil {
		var got error
		if p := s.passed.Load(); p != nil {
			got = *p
		}
		origin := !passedOn(err, got)
		s.span.SetAttributes(OriginKey.Bool(origin))
		if origin {
			s.span.RecordError(err)
			s.span.SetStatus(codes.Error, err.Error())
		} else {
			s.span.SetStatus(codes.Error, "passed on: "+err.Error())
		}
		if s.changes {
			log.FromContext(s.Ctx).Debug("failed", "error", err, "origin", origin)
		}
	}
	s.span.End()
}

// passedOn reports whether err is the error got (or repeats it): got returned as it came, wrapped
// with %w, or its message within err's, as an element that annotates the next hop's status does.
func passedOn(err, got error) bool {
	if got == nil {
		return false
	}
	msg := status.Convert(got).Message()
	return errors.Is(err, got) || (msg != "" && strings.Contains(err.Error(), msg))
}

// NewNetworkServiceServer wraps s with tracing.
func NewNetworkServiceServer(s networkservice.NetworkServiceServer) networkservice.NetworkServiceServer {
	return &server{inner: s, name: ElementName(s)}
}

// NewNetworkServiceClient wraps c with tracing.
func NewNetworkServiceClient(c networkservice.NetworkServiceClient) networkservice.NetworkServiceClient {
	return &client{inner: c, name: ElementName(c)}
}

// link stands between a traced element and the rest of the chain: it sees the request as the
// element passes it on, the reply before the element sees it, and the error that came back.
type link struct {
	*Step
	before proto.Message // the request (Close: the connection) as the element got it, with change lines on
	reply  *networkservice.Connection
}

func newLink(st *Step, got proto.Message) *link {
	l := &link{Step: st}
	if st.changes {
		l.before = proto.Clone(got)
	}
	return l
}

// sent logs what the element changed in what it got before passing it on as now.
func (l *link) sent(what string, now proto.Message) {
	if l.before != nil {
		l.Changed(what, l.before, now)
	}
}

func (l *link) returned(conn *networkservice.Connection, err error) {
	l.PassedOn(err)
	if err == nil && l.changes {
		l.reply = conn.Clone()
	}
}

// end ends a Request's step, first logging what the element changed in the reply.
func (l *link) end(conn *networkservice.Connection, err error) {
	if err == nil && l.reply != nil {
		l.Changed("reply changed", l.reply, conn)
	}
	l.End(err)
}

type server struct {
	inner networkservice.NetworkServiceServer
	name  string
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	l := &serverLink{link: newLink(Start(ctx, s.name, "Request", req.GetConnection().GetId()), req), after: next.Server(ctx)}
	conn, err := s.inner.Request(next.WithServer(l.Ctx, l), req)
	l.end(conn, err)
	return conn, err
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	l := &serverLink{link: newLink(Start(ctx, s.name, "Close", conn.GetId()), conn), after: next.Server(ctx)}
	r, err := s.inner.Close(next.WithServer(l.Ctx, l), conn)
	l.End(err)
	return r, err
}

type serverLink struct {
	*link
	after networkservice.NetworkServiceServer
}

func (l *serverLink) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	l.sent("request changed", req)
	conn, err := l.after.Request(ctx, req)
	l.returned(conn, err)
	return conn, err
}

func (l *serverLink) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	l.sent("connection changed", conn)
	r, err := l.after.Close(ctx, conn)
	l.returned(nil, err)
	return r, err
}

type client struct {
	inner networkservice.NetworkServiceClient
	name  string
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	l := &clientLink{link: newLink(Start(ctx, c.name, "Request", req.GetConnection().GetId()), req), after: next.Client(ctx)}
	conn, err := c.inner.Request(next.WithClient(l.Ctx, l), req, opts...)
	l.end(conn, err)
	return conn, err
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	l := &clientLink{link: newLink(Start(ctx, c.name, "Close", conn.GetId()), conn), after: next.Client(ctx)}
	r, err := c.inner.Close(next.WithClient(l.Ctx, l), conn, opts...)
	l.End(err)
	return r, err
}

type clientLink struct {
	*link
	after networkservice.NetworkServiceClient
}

func (l *clientLink) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	l.sent("request changed", req)
	conn, err := l.after.Request(ctx, req, opts...)
	l.returned(conn, err)
	return conn, err
}

func (l *clientLink) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	l.sent("connection changed", conn)
	r, err := l.after.Close(ctx, conn, opts...)
	l.returned(nil, err)
	return r, err
}
