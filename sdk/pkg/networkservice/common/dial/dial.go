// Package dial connects a client chain to its next hop: it takes the next hop's URL from the
// context (clienturl.ClientURL, put there by clienturl or by discovery), gets a gRPC connection
// to it and hands that connection to the rest of the chain (ClientConn), where connect sends the
// Request or Close over it.
//
// An nsmgr or a forwarder passes thousands of connections to a handful of peers, so dial keeps
// one *grpc.ClientConn per peer, shared by every connection going there, instead of one per
// connection. The shared connections belong to the dial element: made on first use, closed
// when the last connection using them was closed and no other came for the idle timeout
// (WithIdleTimeout: a client that closes and requests again, as a healing or a short-lived one
// does, would otherwise pay a new transport each time), and all closed when the context given
// to NewClient is done.
//
// Guarantees:
//   - Each connection holds a reference on its next hop from its first successful Request to its
//     Close, remembered in its metadata. A first Request that fails drops its reference.
//   - Close goes to the hop the connection was requested from, whatever URL the context names;
//     for a connection this element never requested (a restart), to the URL in the context; with
//     no URL there either, the connection is unknown: NotFound, and no element after dial is
//     called (none holds anything of it).
//   - A refresh naming another URL (the path was reselected) first closes the connection at the
//     old hop through the rest of the chain, then goes to the new one as a first Request would.
//   - An RPC on ClientConn waits at most the dial timeout for the next hop to accept a
//     connection, and fails at once with the transport's reason if the hop refuses.
//   - A Request or Close that never reached the next hop fails with an error marked
//     ErrUnreachable, so that heal can tell a hop that is away from one that answered.
//   - A Request that never reached a next hop which is not the connection's endpoint (an nsmgr
//     or a forwarder, named by the path a refresh carries) is also marked ErrHopAway, and its
//     status carries the mark to the hops before (HopAway): the endpoint may be alive and the
//     vWire still passing packets while a control-plane hop restarts, so heal retries the path
//     it has instead of reselecting.
//
// Place: after begin (which serializes a connection's events) and metadata, after the element
// that sets the URL, before connect. Elements between dial and connect see ClientConn and the
// hop's URL in clienturl.ClientURL.
package dial

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/api/validate"
	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/hopurl"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/telemetry"
)

// ErrUnreachable marks (errors.Is) the error of a Request or Close that never reached the next
// hop, because no connection to it could be made: it is down, restarting, or not listening
// there. The error keeps its gRPC status (Unavailable) and its message. A server's own
// Unavailable answer is not marked: the hop was reached, and it is the one to say what failed.
var ErrUnreachable = errors.New("dial: the next hop could not be reached")

// unreachable is an error marked ErrUnreachable.
type unreachable struct{ err error }

func (u unreachable) Error() string              { return u.err.Error() }
func (u unreachable) Unwrap() []error            { return []error{u.err, ErrUnreachable} }
func (u unreachable) GRPCStatus() *status.Status { return status.Convert(u.err) }

// ErrHopAway marks (errors.Is) the error of a Request that failed because a hop of the path
// other than the endpoint (an nsmgr, a forwarder) could not be reached or could not serve yet,
// as when it restarts: nothing says the endpoint or the vWire is gone. Across processes the mark
// travels in the error's status; HopAway reads both.
var ErrHopAway = errors.New("dial: a hop of the path before the endpoint is away")

// hopAwayReason is the reason of the google.rpc.ErrorInfo detail that carries ErrHopAway in a
// status, in domain hopAwayDomain.
const hopAwayReason, hopAwayDomain = "HOP_AWAY", "vwire.dev"

type hopAway struct{ err error }

func (a hopAway) Error() string   { return a.err.Error() }
func (a hopAway) Unwrap() []error { return []error{a.err, ErrHopAway} }
func (a hopAway) GRPCStatus() *status.Status {
	st := status.Convert(a.err)
	if hasHopAway(st) {
		return st
	}
	if with, err := st.WithDetails(&errdetails.ErrorInfo{Reason: hopAwayReason, Domain: hopAwayDomain}); err == nil {
		return with
	}
	return st
}

// MarkHopAway returns err marked ErrHopAway, its status (gRPC code and message unchanged)
// carrying the mark to the callers of the hop that returns it.
func MarkHopAway(err error) error {
	if err == nil || errors.Is(err, ErrHopAway) {
		return err
	}
	return hopAway{err}
}

// HopAway tells whether err says that a hop of the path other than the endpoint was away:
// marked ErrHopAway in this process, or by a hop after it (its status's details).
func HopAway(err error) bool {
	if errors.Is(err, ErrHopAway) {
		return true
	}
	st, ok := status.FromError(err)
	return ok && hasHopAway(st)
}

func hasHopAway(st *status.Status) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == hopAwayReason && info.GetDomain() == hopAwayDomain {
			return true
		}
	}
	return false
}

// controlPlaneHop tells whether conn's next hop is known to be a hop other than its endpoint,
// by the path segment after this hop's (a refresh carries the path of its last success).
func controlPlaneHop(conn *networkservice.Connection) bool {
	next := conn.GetNextPathSegment()
	return next != nil && next.GetName() != conn.GetNetworkServiceEndpointName()
}

// DefaultIdleTimeout is how long a connection to a next hop stays open after its last user
// closed, unless WithIdleTimeout says otherwise.
const DefaultIdleTimeout = 5 * time.Second

// DefaultDialTimeout is how long an RPC waits for a next hop to accept a connection, unless
// WithDialTimeout says otherwise.
const DefaultDialTimeout = 5 * time.Second

// Option configures the dial element.
type Option func(*options)

type options struct {
	dialOptions []grpc.DialOption
	sockets     *fdpass.Sockets
	timeout     time.Duration
	idle        time.Duration
}

// fastReconnect replaces gRPC's reconnect backoff (1s first, up to 2 minutes): a next hop that
// restarts is back within a second, and heal must not wait longer than that to reach it.
var fastReconnect = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
})

// fixedWindow and fixedConnWindow fix HTTP/2 flow-control windows at 1 MiB instead of letting gRPC
// estimate them: the estimate pings the next hop after nearly every message read, as many packets
// again as the mesh's own few-KB messages.
var (
	fixedWindow     = grpc.WithStaticStreamWindowSize(1 << 20)
	fixedConnWindow = grpc.WithStaticConnWindowSize(1 << 20)
)

// boundedMessages holds messages to and from a next hop to validate.MaxMessageBytes, as its
// server does (grpcserve): gRPC refuses a bigger one with ResourceExhausted.
var boundedMessages = grpc.WithDefaultCallOptions(
	grpc.MaxCallSendMsgSize(validate.MaxMessageBytes), grpc.MaxCallRecvMsgSize(validate.MaxMessageBytes))

// WithDialOptions adds gRPC dial options, applied after the defaults (insecure transport
// credentials that pass files over unix sockets, fdpass.Credentials; fast reconnects, fixed
// flow-control windows, messages of at most validate.MaxMessageBytes; while traces are exported,
// telemetry.DialOptions, which carry the trace to the next hop), so a grpc.WithTransportCredentials here replaces the first: pass TLS
// this way, wrapped in fdpass.Credentials to keep passing files.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithSockets lets the element reach next hops named by inode URL (inode://<dev>/<ino>): unix
// sockets that their servers passed as descriptors when they registered (an endpoint's, a
// forwarder's; sdk's registry recvfd keeps them in sockets), dialed through the descriptor
// whatever their path. Without it such a URL is InvalidArgument.
func WithSockets(sockets *fdpass.Sockets) Option {
	return func(o *options) { o.sockets = sockets }
}

// WithDialTimeout sets how long an RPC waits for the next hop to accept a connection; 0 leaves
// only the caller's deadline.
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// WithIdleTimeout sets how long a connection to a next hop stays open without users; 0 closes
// it with its last user.
func WithIdleTimeout(d time.Duration) Option {
	return func(o *options) { o.idle = d }
}

// hopKey holds the connection's reference on its next hop.
var hopKey = metadata.NewKey[*hop]("dial")

type hopCtxKey struct{}

// ClientConn returns the connection to the next hop of the current event, or nil outside the
// part of a chain after dial. Every connection going to the same next hop gets the same value
// while dial keeps that hop's connection open (a comparable pointer), so an element may key what
// it shares among them on it (monitor keeps one stream per next hop).
func ClientConn(ctx context.Context) grpc.ClientConnInterface {
	if s, ok := ctx.Value(hopCtxKey{}).(*shared); ok {
		return s
	}
	return nil
}

// NewClient returns the dial element; its connections are closed when ctx is done.
func NewClient(ctx context.Context, opts ...Option) networkservice.NetworkServiceClient {
	if ctx == nil {
		panic("dial: NewClient needs a context, got nil")
	}
	o := options{timeout: DefaultDialTimeout, idle: DefaultIdleTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	p := &pool{
		ctx:         ctx,
		timeout:     o.timeout,
		idle:        o.idle,
		dialOptions: slices.Concat([]grpc.DialOption{grpc.WithTransportCredentials(fdpass.Credentials(nil)), fastReconnect, fixedWindow, fixedConnWindow, boundedMessages}, telemetry.DialOptions(), o.dialOptions),
		sockets:     o.sockets,
		conns:       map[string]*shared{},
	}
	context.AfterFunc(ctx, p.closeAll)
	return &client{pool: p}
}

type client struct {
	pool *pool
}

const noURL = "dial: no client URL in the context; put clienturl.NewClient or the discovery element before dial"

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	u, target, err := c.pool.named(ctx)
	if err != nil {
		return nil, err
	}
	m := metadata.Client(ctx)
	h, held := hopKey.Load(m)
	if held && h.target != target {
		c.leave(ctx, h, req.GetConnection(), opts)
		hopKey.Delete(m)
		held = false
	}
	if !held {
		if h, err = c.pool.acquire(u, target); err != nil {
			return nil, err
		}
		hopKey.Store(m, h)
	}
	conn, err := next.Client(ctx).Request(h.into(ctx), req, opts...)
	err = h.shared.marked(err)
	if errors.Is(err, ErrUnreachable) && controlPlaneHop(req.GetConnection()) {
		err = MarkHopAway(err)
	}
	if err != nil && !held {
		hopKey.Delete(m)
		c.pool.release(h)
	}
	return conn, err
}

// leave closes the connection at the hop it is moving away from and drops the reference.
func (c *client) leave(ctx context.Context, old *hop, conn *networkservice.Connection, opts []grpc.CallOption) {
	defer c.pool.release(old)
	if _, err := next.Client(ctx).Close(old.into(ctx), conn.Clone(), opts...); err != nil {
		log.FromContext(ctx).Warn("dial: could not close the connection at the hop it left; it expires there",
			"from", old.url.String(), "error", err)
	}
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	h, held := hopKey.LoadAndDelete(metadata.Client(ctx))
	if !held && clienturl.ClientURL(ctx) == nil {
		// Never requested through here, and nothing before knew where it went (an nsmgr asked to
		// close a connection it never made): nothing after dial holds any of it either.
		return nil, status.Errorf(codes.NotFound, "connection %.100q is unknown here: it was not requested through this hop, "+
			"and nothing names a next hop for it; there is nothing to close", conn.GetId())
	}
	if !held {
		var err error
		if h, err = c.forClose(ctx); err != nil {
			// Nothing to reach; the elements up to connect still clean up.
			_, nextErr := next.Client(ctx).Close(ctx, conn, opts...)
			return nil, errors.Join(err, nextErr)
		}
	}
	defer c.pool.release(h)
	resp, err := next.Client(ctx).Close(h.into(ctx), conn, opts...)
	return resp, h.shared.marked(err)
}

// forClose takes a reference on the hop named in ctx, for closing a connection this element
// never requested.
func (c *client) forClose(ctx context.Context) (*hop, error) {
	u, target, err := c.pool.named(ctx)
	if err != nil {
		return nil, err
	}
	return c.pool.acquire(u, target)
}

// named returns the next hop named in ctx and its gRPC target.
func (p *pool) named(ctx context.Context) (*url.URL, string, error) {
	u := clienturl.ClientURL(ctx)
	if u == nil {
		return nil, "", status.Error(codes.InvalidArgument, noURL)
	}
	if u.Scheme == fdpass.Scheme {
		if p.sockets == nil {
			return nil, "", status.Errorf(codes.InvalidArgument,
				"dial: next hop %s is a socket passed as a descriptor, and this client keeps none; give it dial.WithSockets", u)
		}
		if err := fdpass.Check(u.String()); err != nil {
			return nil, "", fmt.Errorf("dial: %w", err)
		}
		return u, "passthrough:///" + u.String(), nil
	}
	target, err := hopurl.Target(u)
	if err != nil {
		return nil, "", fmt.Errorf("dial: %w", err)
	}
	return u, target, nil
}
