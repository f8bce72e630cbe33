// Package localbypass registers the endpoints of this node under the URL of this node's network
// service manager (nsmgr), so that other nodes reach them through it, while callers on this node
// still get each endpoint's own URL and reach it directly.
//
// An nsmgr runs it in its NSE registry server chain, for the endpoints that register through it:
//   - Register: the endpoint's URL (which must be set, else InvalidArgument) is remembered by
//     endpoint name, and a copy of the record with the nsmgr's URL goes on to the registry; the
//     answer is returned with the endpoint's own URL again. If the registry refuses a first
//     Register, the URL is forgotten; if it refuses an update, the URL of the registration that
//     stands is kept.
//   - Find: every result for an endpoint it knows carries that endpoint's own URL. A Deleted event
//     may come after the endpoint's Unregister made the nsmgr forget it, and then carries the URL
//     the registry held (the nsmgr's): watchers know records by name. A result with the nsmgr's URL for an endpoint it does not know is dropped: it
//     claims to be reached through this nsmgr, which cannot reach it (a registration left from
//     before the nsmgr restarted). Queries are passed on unchanged: a query by URL matches the
//     URLs as the registry holds them (the nsmgr's, for local endpoints).
//   - Unregister: a copy with the nsmgr's URL goes on; the URL is forgotten when the registry
//     accepts it. NSM's localbypass does not pass on Unregisters of endpoints it does not know;
//     this one does, so that an endpoint can still remove its registration after the nsmgr
//     restarted.
//
// Localbypass belongs in the nsmgr's NSE server chain after begin and before the element that
// passes registrations on to the registry.
package localbypass

import (
	"context"
	"net/url"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/core/next"
)

type nse = registry.NetworkServiceEndpoint

// NewNSE returns localbypass for an nsmgr reached at nsmgrURL.
func NewNSE(nsmgrURL string) next.NSE {
	if u, err := url.Parse(nsmgrURL); err != nil || nsmgrURL == "" || u.Scheme == "" {
		panic("localbypass: the nsmgr URL " + nsmgrURL + " is not a URL such as tcp://10.0.0.1:5001 or unix:///run/nsm/nsm.sock")
	}
	return &localbypass{nsmgrURL: nsmgrURL, urls: map[string]string{}}
}

type localbypass struct {
	nsmgrURL string
	mu       sync.Mutex
	urls     map[string]string // endpoint name -> its own URL
}

func (l *localbypass) Register(ctx context.Context, in *nse) (*nse, error) {
	own := in.GetUrl()
	if own == "" {
		return nil, status.Errorf(codes.InvalidArgument,
			"localbypass: endpoint %q has no url; register it with the URL it serves on", in.GetName())
	}
	name := in.GetName()
	l.mu.Lock()
	before, known := l.urls[name]
	l.urls[name] = own
	l.mu.Unlock()

	out := in.Clone()
	out.Url = l.nsmgrURL
	got, err := next.Of[*nse](ctx).Register(ctx, out)
	if err != nil {
		l.mu.Lock()
		if known {
			l.urls[name] = before
		} else {
			delete(l.urls, name)
		}
		l.mu.Unlock()
		return nil, err
	}
	got = got.Clone()
	got.Url = own
	return got, nil
}

func (l *localbypass) Find(ctx context.Context, q *next.Query[*nse], send func(*next.Event[*nse]) error) error {
	return next.Of[*nse](ctx).Find(ctx, q, func(ev *next.Event[*nse]) error {
		l.mu.Lock()
		own, known := l.urls[ev.Record.GetName()]
		l.mu.Unlock()
		switch {
		case known:
			ev.Record.Url = own
		case ev.Record.GetUrl() == l.nsmgrURL && !ev.Deleted:
			return nil
		}
		return send(ev)
	})
}

func (l *localbypass) Unregister(ctx context.Context, in *nse) error {
	if in == nil {
		return next.Of[*nse](ctx).Unregister(ctx, in)
	}
	out := in.Clone()
	out.Url = l.nsmgrURL
	if err := next.Of[*nse](ctx).Unregister(ctx, out); err != nil {
		return err
	}
	l.mu.Lock()
	delete(l.urls, in.GetName())
	l.mu.Unlock()
	return nil
}
