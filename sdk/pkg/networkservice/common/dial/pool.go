package dial

import (
	"context"
	"net/url"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/fdpass"
)

// pool shares one *grpc.ClientConn per target among the connections going there.
type pool struct {
	ctx         context.Context
	timeout     time.Duration
	idle        time.Duration
	dialOptions []grpc.DialOption
	sockets     *fdpass.Sockets // where the sockets of inode URLs are

	mu    sync.Mutex
	conns map[string]*shared // by target; nil once ctx is done
}

// shared is one next hop's *grpc.ClientConn and the ClientConn the rest of the chain uses: it
// waits for the connection to be made before each RPC.
type shared struct {
	cc      *grpc.ClientConn
	url     *url.URL // as the first connection going there named it
	timeout time.Duration
	refs    int         // guarded by pool.mu
	idle    clock.Timer // closes cc if no user comes back in time; guarded by pool.mu
}

// hop is one connection's reference on a shared ClientConn.
type hop struct {
	url      *url.URL
	target   string
	shared   *shared
	released bool // guarded by pool.mu
}

func (p *pool) acquire(u *url.URL, target string) (*hop, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return nil, status.Errorf(codes.Unavailable, "dial: the client chain is shut down (%v); not dialing %s", context.Cause(p.ctx), u)
	}
	s := p.conns[target]
	if s == nil {
		opts := p.dialOptions
		if u.Scheme == fdpass.Scheme {
			opts = append(opts[:len(opts):len(opts)], p.sockets.Dialer(u.String()))
		}
		cc, err := grpc.NewClient(target, opts...)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "dial: %s: %v; check the dial options", u, err)
		}
		s = &shared{cc: cc, url: u, timeout: p.timeout}
		p.conns[target] = s
	}
	if s.idle != nil {
		s.idle.Stop()
		s.idle = nil
	}
	s.refs++
	return &hop{url: u, target: target, shared: s}, nil
}

// release drops h's reference and closes its ClientConn if it was the last one.
func (p *pool) release(h *hop) {
	p.mu.Lock()
	if h.released {
		p.mu.Unlock()
		return
	}
	h.released = true
	s := h.shared
	s.refs--
	if s.refs > 0 || p.conns[h.target] != s {
		p.mu.Unlock()
		return
	}
	if p.idle > 0 {
		s.idle = clock.FromContext(p.ctx).AfterFunc(p.idle, func() { p.expire(h.target, s) })
		p.mu.Unlock()
		return
	}
	delete(p.conns, h.target)
	p.mu.Unlock()
	_ = s.cc.Close()
}

// expire closes s if it is still unused at the end of its idle time.
func (p *pool) expire(target string, s *shared) {
	p.mu.Lock()
	if s.refs > 0 || p.conns[target] != s {
		p.mu.Unlock()
		return
	}
	delete(p.conns, target)
	p.mu.Unlock()
	_ = s.cc.Close()
}

// closeAll closes every ClientConn when the chain's context is done; references still held
// then point at closed connections, whose RPCs fail.
func (p *pool) closeAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, s := range conns {
		if s.idle != nil {
			s.idle.Stop()
		}
		_ = s.cc.Close()
	}
}

// into returns ctx for the rest of the chain: with h's shared connection as ClientConn and its
// URL as ClientURL.
func (h *hop) into(ctx context.Context) context.Context {
	return context.WithValue(clienturl.WithClientURL(ctx, h.url), hopCtxKey{}, h.shared)
}

// Invoke implements grpc.ClientConnInterface.
func (s *shared) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	return s.cc.Invoke(ctx, method, args, reply, opts...)
}

// marked marks err ErrUnreachable when it is Unavailable while the connection is not ready: the
// call never reached the next hop (a hop that answers Unavailable itself answers over a ready
// connection).
func (s *shared) marked(err error) error {
	if err != nil && status.Code(err) == codes.Unavailable && s.cc.GetState() != connectivity.Ready {
		return unreachable{err}
	}
	return err
}

// NewStream implements grpc.ClientConnInterface.
func (s *shared) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	return s.cc.NewStream(ctx, desc, method, opts...)
}

// ready waits, at most the dial timeout, until the connection is made or has failed; after a
// failure the RPC fails at once with the transport's reason.
func (s *shared) ready(ctx context.Context) error {
	cc := s.cc
	if st := cc.GetState(); st == connectivity.Ready || st == connectivity.TransientFailure || s.timeout <= 0 {
		return nil
	}
	wait, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := clock.FromContext(ctx).AfterFunc(s.timeout, cancel)
	defer timer.Stop()
	cc.Connect()
	for {
		st := cc.GetState()
		if st == connectivity.Ready || st == connectivity.TransientFailure || st == connectivity.Shutdown {
			return nil // the RPC reports a closed connection itself
		}
		if !cc.WaitForStateChange(wait, st) {
			if err := ctx.Err(); err != nil {
				return status.FromContextError(err).Err()
			}
			return status.Errorf(codes.Unavailable, "dial: %s did not accept a connection within %v; check that it is running and reachable", s.url, s.timeout)
		}
	}
}
