// Package next defines the registry element and links registry elements into chains.
//
// NSM's registry API has two services with the same shape, one for network services (NS) and one
// for network service endpoints (NSE), each with a server and a client flavour. vwire writes a
// registry element once: an Element[R] works for either record and on either side, and
// registry/core/adapters turns a chain into a gRPC server or a gRPC client into an element.
// An element calls the rest of its chain with next.Of[R](ctx), as NetworkService elements do.
package next

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/protobuf/proto"

	"vwire.dev/sdk/pkg/networkservice/core/trace"
)

// Record is a registry record: a network service or a network service endpoint.
type Record interface {
	*registry.NetworkService | *registry.NetworkServiceEndpoint
	proto.Message
	GetName() string
}

// Query asks Find for the records matching Record (see registry/common/memory for matching);
// with Watch, Find goes on sending changes until its context ends.
type Query[R Record] struct {
	Record R
	Watch  bool
}

// Event is one result of Find: a record, or with Deleted, a record that went away.
type Event[R Record] struct {
	Record  R
	Deleted bool
}

// Element is one step of a registry chain.
type Element[R Record] interface {
	Register(ctx context.Context, r R) (R, error)
	// Find calls send for each result, in order, and returns when the results (for a watch:
	// the context) end or send fails.
	Find(ctx context.Context, q *Query[R], send func(*Event[R]) error) error
	Unregister(ctx context.Context, r R) error
}

// NS and NSE name the two instantiations.
type (
	NS  = Element[*registry.NetworkService]
	NSE = Element[*registry.NetworkServiceEndpoint]
)

type key[R Record] struct{}

// Of returns the rest of the chain of R-elements that ctx was passed into.
func Of[R Record](ctx context.Context) Element[R] {
	if e, ok := ctx.Value(key[R]{}).(Element[R]); ok {
		return e
	}
	return tail[R]{}
}

// With returns ctx in which Of[R] is e.
func With[R Record](ctx context.Context, e Element[R]) context.Context {
	return context.WithValue(ctx, key[R]{}, e)
}

// Chain links elements into one; each calls the next with Of[R]. With no elements it passes
// everything on: a do-nothing element for an optional slot. When trace.Enabled()
// (sdk/pkg/networkservice/core/trace) at build time, each element runs in a span per call.
func Chain[R Record](elements ...Element[R]) Element[R] {
	if trace.Enabled() {
		wrapped := make([]Element[R], len(elements))
		for i, e := range elements {
			wrapped[i] = &traced[R]{inner: e, name: trace.ElementName(e)}
		}
		elements = wrapped
	}
	c := &chain[R]{elements: elements, alone: make([]link[R], len(elements)+1)}
	for i := range c.alone {
		c.alone[i] = link[R]{chain: c, index: i, after: tail[R]{}}
	}
	return c
}

type chain[R Record] struct {
	elements []Element[R]
	alone    []link[R] // the links when nothing follows the chain, made once
}

// first returns the link to the chain's first element, followed by what follows the chain in ctx.
func (c *chain[R]) first(ctx context.Context) *link[R] {
	if after, ok := ctx.Value(key[R]{}).(Element[R]); ok {
		return &link[R]{chain: c, after: after}
	}
	return &c.alone[0]
}

func (c *chain[R]) Register(ctx context.Context, r R) (R, error) {
	return c.first(ctx).Register(ctx, r)
}

func (c *chain[R]) Find(ctx context.Context, q *Query[R], send func(*Event[R]) error) error {
	return c.first(ctx).Find(ctx, q, send)
}

func (c *chain[R]) Unregister(ctx context.Context, r R) error {
	return c.first(ctx).Unregister(ctx, r)
}

type link[R Record] struct {
	chain *chain[R]
	index int
	after Element[R]
}

func (l *link[R]) step(ctx context.Context) (Element[R], context.Context) {
	if l.index == len(l.chain.elements) {
		return l.after, With[R](ctx, l.after)
	}
	following := &l.chain.alone[l.index+1]
	if l != &l.chain.alone[l.index] {
		following = &link[R]{chain: l.chain, index: l.index + 1, after: l.after}
	}
	return l.chain.elements[l.index], With[R](ctx, following)
}

func (l *link[R]) Register(ctx context.Context, r R) (R, error) {
	e, ctx := l.step(ctx)
	return e.Register(ctx, r)
}

func (l *link[R]) Find(ctx context.Context, q *Query[R], send func(*Event[R]) error) error {
	e, ctx := l.step(ctx)
	return e.Find(ctx, q, send)
}

func (l *link[R]) Unregister(ctx context.Context, r R) error {
	e, ctx := l.step(ctx)
	return e.Unregister(ctx, r)
}

// tail ends every chain: registration succeeds as given, Find finds nothing.
type tail[R Record] struct{}

func (tail[R]) Register(_ context.Context, r R) (R, error) { return r, nil }

func (tail[R]) Find(context.Context, *Query[R], func(*Event[R]) error) error { return nil }

func (tail[R]) Unregister(context.Context, R) error { return nil }
