// Package metrics records what a hop of the NetworkService API does, as OpenTelemetry metrics:
// the Requests and Closes its callers make, by network service and gRPC status code, how long
// each Request took at this hop, and how many connections the hop holds. The measurements go to
// the process's MeterProvider (otel.GetMeterProvider(), which sdk/pkg/tools/telemetry sets to
// export over OTLP and Prometheus), or to WithMeterProvider's.
//
// Two server elements, because no single place in a chain sees both things (the endpoint chain,
// and so every nsmgr, forwarder and endpoint, has both):
//   - NewServer counts calls. It goes first in a server chain, before updatepath, validate, begin
//     and authorize, so that a Request they refuse counts as an error with their code, and the
//     duration is what the caller waited at this hop, its turn behind the connection's other
//     events included. Background events (heal's and refresh's Requests, timeout's and orphan's
//     Closes) re-enter after begin and are not calls of a caller: it does not see them.
//   - NewConnectionsServer counts the connections the hop holds. It goes after metadata, where
//     every event of a connection passes, background Closes too: a connection counts from its
//     first successful Request to its Close.
//
// NewClient is NewServer for a client chain, where it counts the Requests and Closes the chain
// sends, heal's and refresh's included (it goes after begin), under the client side's names: a
// workload's view of its nsmgr, an nsmgr's of its forwarders, a forwarder's of its next hop.
//
// Cost: with no MeterProvider set (OpenTelemetry's global no-op), each call asks an instrument
// whether it is enabled and does nothing more. With one, a call builds one attribute set.
//
// Metric names and attributes (the sdk README lists them all):
//
//	vwire.networkservice.server.requests          counter    {request}     hop, service, code
//	vwire.networkservice.server.request.duration  histogram  s             hop, service, code
//	vwire.networkservice.server.closes            counter    {close}       hop, service, code
//	vwire.networkservice.server.connections       up-down    {connection}  hop, service
//	vwire.networkservice.client.*                 as the first three, for what a client chain sends
//
// with hop vwire.hop, service nsm.network_service and code rpc.grpc.status_code.
package metrics

import (
	"context"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// scope is the instrumentation scope of the instruments of this package.
const scope = "vwire.dev/sdk/pkg/networkservice/common/metrics"

// Attribute keys every instrument of the NetworkService API uses.
const (
	HopKey     = attribute.Key("vwire.hop")            // the name of the hop: its path segment
	ServiceKey = attribute.Key("nsm.network_service")  // the connection's network service
	CodeKey    = attribute.Key("rpc.grpc.status_code") // the call's gRPC status, as its name (OK, NOT_FOUND)
)

// Option configures an element.
type Option func(*options)

type options struct {
	provider metric.MeterProvider
}

// WithMeterProvider records to p instead of the process's global provider (tests, or a
// component that keeps its metrics apart).
func WithMeterProvider(p metric.MeterProvider) Option { return func(o *options) { o.provider = p } }

type instruments struct {
	hop      attribute.KeyValue
	requests metric.Int64Counter
	duration metric.Float64Histogram
	closes   metric.Int64Counter
}

// durationBuckets span a hop's Request, from a local hop's fraction of a millisecond to a
// Request that waited for a slow endpoint or a timeout.
var durationBuckets = []float64{0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30}

// newInstruments makes the instruments of one side ("server" or "client") of the hop named hop.
func newInstruments(side, hop string, opts []Option) *instruments {
	m := meter(opts)
	prefix := "vwire.networkservice." + side + "."
	in := &instruments{hop: HopKey.String(hop)}
	var err [3]error
	in.requests, err[0] = m.Int64Counter(prefix+"requests", metric.WithUnit("{request}"),
		metric.WithDescription("Requests of the hop's "+side+" side, by network service and gRPC status code"))
	in.duration, err[1] = m.Float64Histogram(prefix+"request.duration", metric.WithUnit("s"),
		metric.WithDescription("How long a Request took at the hop's "+side+" side, until its answer"),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	in.closes, err[2] = m.Int64Counter(prefix+"closes", metric.WithUnit("{close}"),
		metric.WithDescription("Closes of the hop's "+side+" side, by network service and gRPC status code"))
	HandleErrors(err[:]...)
	return in
}

func meter(opts []Option) metric.Meter {
	o := &options{provider: otel.GetMeterProvider()}
	for _, opt := range opts {
		opt(o)
	}
	return o.provider.Meter(scope)
}

// HandleErrors passes the errors of making instruments to OpenTelemetry's error handler (its
// default logs them): an instrument made with an error still works, and the provider's error says
// what it refused. The other instrumented packages of vwire use it too.
func HandleErrors(errs ...error) {
	for _, err := range errs {
		if err != nil {
			otel.Handle(err)
		}
	}
}

// begins tells whether the call is measured, and when it began.
func (in *instruments) begins(ctx context.Context) (time.Time, bool) {
	if !in.requests.Enabled(ctx) {
		return time.Time{}, false
	}
	return time.Now(), true // the real time the caller waits, whatever clock the chain runs on
}

// requested records a Request for service that began at start and ended with err.
func (in *instruments) requested(ctx context.Context, start time.Time, service string, err error) {
	set := metric.WithAttributeSet(attribute.NewSet(in.hop, ServiceKey.String(trusted(service, err)), Code(err)))
	in.requests.Add(ctx, 1, set)
	in.duration.Record(ctx, time.Since(start).Seconds(), set)
}

// closed records a Close for service that ended with err.
func (in *instruments) closed(ctx context.Context, service string, err error) {
	if in.closes.Enabled(ctx) {
		in.closes.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(in.hop, ServiceKey.String(trusted(service, err)), Code(err))))
	}
}

// trusted is the service a call is counted under: the one it named, unless the hop refused the
// call before trusting it (malformed, over a limit, not authenticated or not allowed), which is
// counted under "" so that a stranger cannot add a series for every name it makes up.
func trusted(service string, err error) string {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.ResourceExhausted, codes.Unauthenticated, codes.PermissionDenied:
		return ""
	}
	return service
}

// NewServer returns the element that counts the calls callers make to the hop named hop; it goes
// first in the chain.
func NewServer(hop string, opts ...Option) networkservice.NetworkServiceServer {
	return &server{newInstruments("server", hop, opts)}
}

type server struct{ *instruments }

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	start, on := s.begins(ctx)
	conn, err := next.Server(ctx).Request(ctx, req)
	if on {
		s.requested(ctx, start, req.GetConnection().GetNetworkService(), err)
	}
	return conn, err
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	empty, err := next.Server(ctx).Close(ctx, conn)
	s.closed(ctx, conn.GetNetworkService(), err)
	return empty, err
}

// NewClient returns the element that counts the calls the client chain named hop sends: placed
// after begin, heal's and refresh's too. Its instruments are the client side's.
func NewClient(hop string, opts ...Option) networkservice.NetworkServiceClient {
	return &client{newInstruments("client", hop, opts)}
}

type client struct{ *instruments }

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	start, on := c.begins(ctx)
	conn, err := next.Client(ctx).Request(ctx, req, opts...)
	if on {
		c.requested(ctx, start, req.GetConnection().GetNetworkService(), err)
	}
	return conn, err
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	empty, err := next.Client(ctx).Close(ctx, conn, opts...)
	c.closed(ctx, conn.GetNetworkService(), err)
	return empty, err
}

// codeNames are gRPC's canonical names of its codes, as the attribute's values.
var codeNames = [...]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN", codes.InvalidArgument: "INVALID_ARGUMENT",
	codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED", codes.OutOfRange: "OUT_OF_RANGE",
	codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
	codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

// Code is the status code attribute of err: OK for nil, UNKNOWN for an error without a code
// (as gRPC sends it), a context error as the code gRPC gives it.
func Code(err error) attribute.KeyValue {
	c := status.Code(err)
	if c == codes.Unknown {
		c = status.FromContextError(err).Code()
	}
	if int(c) < len(codeNames) {
		return CodeKey.String(codeNames[c])
	}
	return CodeKey.String(c.String())
}

// NewConnectionsServer returns the element that counts the connections the hop named hop holds;
// it goes after metadata.
func NewConnectionsServer(hop string, opts ...Option) networkservice.NetworkServiceServer {
	live, err := meter(opts).Int64UpDownCounter("vwire.networkservice.server.connections", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections the hop holds: established by a Request, not closed yet"))
	HandleErrors(err)
	return &connections{hop: HopKey.String(hop), live: live}
}

type connections struct {
	hop  attribute.KeyValue
	live metric.Int64UpDownCounter
}

// countedKey marks a connection this element counted, with the attributes it counted it under,
// so that its Close takes back exactly that.
var countedKey = metadata.NewKey[metric.AddOption]("metrics counted")

func (c *connections) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil || !c.live.Enabled(ctx) {
		return conn, err
	}
	m := metadata.Server(ctx)
	if _, counted := countedKey.Load(m); !counted {
		set := metric.WithAttributeSet(attribute.NewSet(c.hop, ServiceKey.String(conn.GetNetworkService())))
		countedKey.Store(m, set)
		c.live.Add(ctx, 1, set)
	}
	return conn, nil
}

func (c *connections) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if set, counted := countedKey.LoadAndDelete(metadata.Server(ctx)); counted {
		c.live.Add(ctx, -1, set)
	}
	return next.Server(ctx).Close(ctx, conn)
}
