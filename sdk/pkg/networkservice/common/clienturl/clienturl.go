// Package clienturl carries the URL of the next hop in the context, from the element that
// decides where a Request goes (discovery, or this package's element for a fixed peer) to dial,
// which connects to it.
//
// Deciding and connecting are separate jobs: an nsmgr learns the next hop per Request from the
// registry, while a client always talks to its one nsmgr; both end in the same dial and connect.
// The element puts a fixed URL in the context of every Request and Close, so it belongs before
// dial. Nothing is kept per connection.
package clienturl

import (
	"context"
	"net/url"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

type urlKey struct{}

// WithClientURL returns ctx in which ClientURL is u. Callers must not change u afterwards.
func WithClientURL(ctx context.Context, u *url.URL) context.Context {
	return context.WithValue(ctx, urlKey{}, u)
}

// ClientURL returns the next hop's URL stored in ctx, or nil. Do not change the URL returned.
func ClientURL(ctx context.Context) *url.URL {
	u, _ := ctx.Value(urlKey{}).(*url.URL)
	return u
}

// NewServer returns an element that sends every Request and Close of its chain to u.
func NewServer(u *url.URL) networkservice.NetworkServiceServer {
	if u == nil {
		panic("clienturl: NewServer needs a URL, got nil")
	}
	fixed := *u // the caller's copy may change; ours does not
	return &server{url: &fixed}
}

// NewClient returns an element that sends every Request and Close of its chain to u.
func NewClient(u *url.URL) networkservice.NetworkServiceClient {
	if u == nil {
		panic("clienturl: NewClient needs a URL, got nil")
	}
	return adapters.NewServerToClient(NewServer(u))
}

type server struct {
	url *url.URL
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	ctx = WithClientURL(ctx, s.url)
	return next.Server(ctx).Request(ctx, req)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	ctx = WithClientURL(ctx, s.url)
	return next.Server(ctx).Close(ctx, conn)
}
