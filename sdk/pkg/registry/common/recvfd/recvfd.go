// Package recvfd receives unix sockets that endpoints and forwarders pass by descriptor when
// they register (a record whose URL is inode://<dev>/<ino>, sent as NSM's do), keeps them in an
// fdpass.Sockets table for dialing (networkservice/common/dial.WithSockets), and passes them on
// to whoever finds the record.
//
// The server belongs in an nsmgr's NSE registry as its callers reach it over gRPC (not in the
// chain the nsmgr's own lookups use): on Register and Unregister it takes the socket from the
// call, and on Find it sends the socket of every result that names one it keeps to the caller
// beside the result (a forwarder, which dials the endpoint through it). The client belongs in
// a registry client chain whose Finds bring such results (a forwarder's lookups through its
// nsmgr), on a connection dialed with fdpass.Interceptors; it takes the sockets into its table.
//
// Guarantees:
//   - A registrant hands over only a socket it holds: a Register naming an inode URL whose
//     descriptor did not come with the call is refused with PermissionDenied, and nothing is
//     registered.
//   - The table keeps one descriptor per socket: the server from the registration (already while
//     the registry takes it, so that a watcher told of the record gets the socket with it) until
//     the endpoint unregisters or registers another socket; the client from the result that
//     brought it until the record is deleted. A result whose socket did not come
//     is passed on, and dialing it fails with Unavailable.
package recvfd

import (
	"context"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/registry"

	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/log"
)

type nse = registry.NetworkServiceEndpoint

// NewServer returns the server element, keeping sockets in sockets.
func NewServer(sockets *fdpass.Sockets) next.NSE {
	if sockets == nil {
		panic("recvfd: NewServer needs a socket table, got nil")
	}
	return &server{sockets: sockets, byName: map[string]string{}}
}

type server struct {
	sockets *fdpass.Sockets
	mu      sync.Mutex
	byName  map[string]string // endpoint name -> the inode URL of its socket
}

func (s *server) Register(ctx context.Context, r *nse) (*nse, error) {
	u := r.GetUrl()
	if !fdpass.IsURL(u) {
		return next.Of[*nse](ctx).Register(ctx, r)
	}
	f, err := fdpass.Receive(ctx, fdpass.Peer(ctx), u)
	if err != nil {
		return nil, err
	}
	// Kept before the registry takes the record: its watchers are told at once, and Find sends
	// them the socket only if it is here.
	s.sockets.Put(u, f)
	got, err := next.Of[*nse](ctx).Register(ctx, r)
	s.mu.Lock()
	old := s.byName[r.GetName()]
	if err == nil {
		s.byName[r.GetName()] = u
	}
	s.mu.Unlock()
	if err != nil {
		if old != u { // a refresh that failed keeps the socket of its registration
			s.sockets.Forget(u)
		}
		return nil, err
	}
	if old != "" && old != u {
		s.sockets.Forget(old)
	}
	return got, nil
}

func (s *server) Find(ctx context.Context, q *next.Query[*nse], send func(*next.Event[*nse]) error) error {
	sender := fdpass.Peer(ctx)
	if sender == nil {
		return next.Of[*nse](ctx).Find(ctx, q, send)
	}
	return next.Of[*nse](ctx).Find(ctx, q, func(ev *next.Event[*nse]) error {
		if f := s.sockets.Get(ev.Record.GetUrl()); f != nil && !ev.Deleted {
			_ = sender.SendFile(f) // goes out with the result; a failure shows when the caller dials
		}
		return send(ev)
	})
}

func (s *server) Unregister(ctx context.Context, r *nse) error {
	if err := next.Of[*nse](ctx).Unregister(ctx, r); err != nil {
		return err
	}
	s.mu.Lock()
	u, ok := s.byName[r.GetName()]
	delete(s.byName, r.GetName())
	s.mu.Unlock()
	if ok {
		s.sockets.Forget(u)
	}
	return nil
}

// NewClient returns the client element, keeping the sockets that Find results bring in sockets.
func NewClient(sockets *fdpass.Sockets) next.NSE {
	if sockets == nil {
		panic("recvfd: NewClient needs a socket table, got nil")
	}
	return &client{sockets: sockets}
}

type client struct{ sockets *fdpass.Sockets }

func (c *client) Register(ctx context.Context, r *nse) (*nse, error) {
	return next.Of[*nse](ctx).Register(ctx, r)
}

func (c *client) Find(ctx context.Context, q *next.Query[*nse], send func(*next.Event[*nse]) error) error {
	call := &fdpass.Call{}
	return next.Of[*nse](ctx).Find(fdpass.WithCall(ctx, call), q, func(ev *next.Event[*nse]) error {
		u := ev.Record.GetUrl()
		switch {
		case !fdpass.IsURL(u):
		case ev.Deleted:
			c.sockets.Forget(u)
		default:
			f, err := fdpass.Receive(ctx, call.Peer(), u)
			if err != nil {
				log.FromContext(ctx).Warn("recvfd: a found endpoint's socket did not come; dialing it will fail", "endpoint", ev.Record.GetName(), "url", u, "error", err)
				break
			}
			c.sockets.Put(u, f)
		}
		return send(ev)
	})
}

func (c *client) Unregister(ctx context.Context, r *nse) error {
	return next.Of[*nse](ctx).Unregister(ctx, r)
}
