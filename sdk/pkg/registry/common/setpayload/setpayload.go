// Package setpayload gives a network service registered without a payload the default one, so
// that every stored service says whether it carries IP or Ethernet.
//
// Before next, a network service whose payload is empty is passed on as a copy with the default
// payload: IP (NSM's payload.IP), or the one WithDefault sets. A payload that is set is kept.
// Setpayload belongs in a registry server's NS chain before the store.
package setpayload

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/networkservicemesh/api/pkg/api/registry"

	"vwire.dev/sdk/pkg/registry/core/next"
)

type ns = registry.NetworkService

// Option configures setpayload.
type Option func(*setpayload)

// WithDefault sets the payload given to services registered without one (payload.IP or
// payload.Ethernet).
func WithDefault(p string) Option {
	if p == "" {
		panic("setpayload: WithDefault needs a payload")
	}
	return func(s *setpayload) { s.payload = p }
}

// NewNS returns setpayload for network services.
func NewNS(opts ...Option) next.NS {
	s := &setpayload{payload: payload.IP}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

type setpayload struct {
	payload string
}

func (s *setpayload) Register(ctx context.Context, in *ns) (*ns, error) {
	if in != nil && in.GetPayload() == "" {
		in = in.Clone()
		in.Payload = s.payload
	}
	return next.Of[*ns](ctx).Register(ctx, in)
}

func (s *setpayload) Find(ctx context.Context, q *next.Query[*ns], send func(*next.Event[*ns]) error) error {
	return next.Of[*ns](ctx).Find(ctx, q, send)
}

func (s *setpayload) Unregister(ctx context.Context, in *ns) error {
	return next.Of[*ns](ctx).Unregister(ctx, in)
}
