// Package sendfd sends an endpoint's unix socket beside its Register and Unregister calls, as
// NSM's endpoints do: a record whose URL is unix:///path goes out named by the socket's inode
// URL (inode://<dev>/<ino>), with the socket's descriptor, and the caller gets its own URL back.
//
// Why: a socket path means something only in the mount namespace of the process that made it;
// an endpoint in a pod shares none with its nsmgr and forwarder, so it hands over the socket
// itself. The nsmgr (registry/common/recvfd) keeps it and gives it to its forwarders, which dial
// the endpoint through it.
//
// The element belongs in a registry client chain for one record (registry/chains/client's
// Register with WithSocketPassed), before connect, on a connection dialed with
// fdpass.Interceptors. It opens the socket at the first Register and sends that same file with
// every later call (refreshes, registrations again after the nsmgr restarted), so the path
// matters only once; it lets go of it after Unregister. A socket that cannot be opened fails the
// first Register with InvalidArgument before anything is sent; other URLs (tcp) pass as they
// are, and an Unregister is never refused.
package sendfd

import (
	"context"
	"net/url"
	"os"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/hopurl"
)

type nse = registry.NetworkServiceEndpoint

// NewNSE returns the element.
func NewNSE() next.NSE { return &client{} }

type client struct {
	mu     sync.Mutex
	path   string   // the socket's path as the record named it
	socket *os.File // opened O_PATH at the first Register
}

// outgoing returns the record as it goes out, and the context that sends its socket.
func (c *client) outgoing(ctx context.Context, r *nse) (context.Context, *nse, error) {
	u, err := url.Parse(r.GetUrl())
	if err != nil || u.Scheme != hopurl.Unix || u.Path == "" {
		return ctx, r, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.socket == nil || c.path != u.Path {
		f, err := os.OpenFile(u.Path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, nil, status.Errorf(codes.InvalidArgument, "sendfd: cannot send the socket of endpoint %q (%s): %v", r.GetName(), r.GetUrl(), err)
		}
		if c.socket != nil {
			_ = c.socket.Close()
		}
		c.path, c.socket = u.Path, f
	}
	inode, err := fdpass.URLOf(c.socket)
	if err != nil {
		return nil, nil, status.Errorf(codes.Internal, "sendfd: %v", err)
	}
	out := r.Clone()
	out.Url = inode
	return fdpass.WithSend(ctx, c.socket), out, nil
}

func (c *client) Register(ctx context.Context, r *nse) (*nse, error) {
	ctx, out, err := c.outgoing(ctx, r)
	if err != nil {
		return nil, err
	}
	got, err := next.Of[*nse](ctx).Register(ctx, out)
	if err != nil || out == r {
		return got, err
	}
	got = got.Clone()
	if got.GetUrl() == out.GetUrl() {
		got.Url = r.GetUrl()
	}
	return got, nil
}

func (c *client) Find(ctx context.Context, q *next.Query[*nse], send func(*next.Event[*nse]) error) error {
	return next.Of[*nse](ctx).Find(ctx, q, send)
}

func (c *client) Unregister(ctx context.Context, r *nse) error {
	sending, out, err := c.outgoing(ctx, r)
	if err != nil { // the socket is gone: the registration goes all the same
		sending, out = ctx, r
	}
	err = next.Of[*nse](sending).Unregister(sending, out)
	c.mu.Lock()
	if c.socket != nil {
		_ = c.socket.Close()
		c.socket = nil
	}
	c.mu.Unlock()
	return err
}
