// Package authorize lets only the registrant of a record change or unregister it, so that one
// workload cannot take over or remove another's network service or endpoint by using its name.
//
// The first successful Register of a name records its owner: the caller's identity, which is
// the one WithIdentity put into the context (for example the peer's SPIFFE ID, set by the
// component that authenticated it), else the first of the record's path_ids (the registrant, as
// updatepath writes them), else the empty identity (an anonymous caller, who is then the owner).
// A Register or Unregister of that name by another identity is refused with PermissionDenied
// naming the record and its owner; the owner is forgotten when the name is unregistered. Find is
// not restricted. With Any, every caller may do anything.
//
// Authorize belongs in a registry server chain after updatepath and after begin: after begin so
// that an expiry (which re-enters the chain at begin, with the registrant's own context) passes
// through it and the owner of an expired record is forgotten.
package authorize

import (
	"context"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/core/next"
)

type identityKey struct{}

// WithIdentity returns ctx in which the caller is id.
func WithIdentity(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// Option configures authorize.
type Option func(*options)

type options struct{ any bool }

// Any lets every caller register and unregister every name.
func Any() Option { return func(o *options) { o.any = true } }

// NewNS returns authorize for network services.
func NewNS(opts ...Option) next.NS { return newAuthorize[*registry.NetworkService](opts) }

// NewNSE returns authorize for network service endpoints.
func NewNSE(opts ...Option) next.NSE { return newAuthorize[*registry.NetworkServiceEndpoint](opts) }

// record is what authorize reads of a record: both registry records have path_ids.
type record interface {
	next.Record
	GetPathIds() []string
}

type authorize[R record] struct {
	options
	mu     sync.Mutex
	owners map[string]string // name -> owner identity
}

func newAuthorize[R record](opts []Option) *authorize[R] {
	a := &authorize[R]{owners: map[string]string{}}
	for _, opt := range opts {
		opt(&a.options)
	}
	return a
}

func identity[R record](ctx context.Context, r R) string {
	if id, ok := ctx.Value(identityKey{}).(string); ok {
		return id
	}
	if ids := r.GetPathIds(); len(ids) > 0 {
		return ids[0]
	}
	return ""
}

// check refuses id if name has another owner; with claim, it makes id the owner of a name that
// has none and reports that it did.
func (a *authorize[R]) check(name, id string, claim bool) (claimed bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	owner, known := a.owners[name]
	if known && owner != id {
		return false, status.Errorf(codes.PermissionDenied,
			"authorize: %q is registered by %s; %s may not change or unregister it", name, who(owner), who(id))
	}
	if !known && claim {
		a.owners[name] = id
		return true, nil
	}
	return false, nil
}

func who(id string) string {
	if id == "" {
		return "an anonymous caller"
	}
	return `"` + id + `"`
}

func (a *authorize[R]) forget(name string) {
	a.mu.Lock()
	delete(a.owners, name)
	a.mu.Unlock()
}

func (a *authorize[R]) Register(ctx context.Context, r R) (R, error) {
	if a.any {
		return next.Of[R](ctx).Register(ctx, r)
	}
	claimed, err := a.check(r.GetName(), identity(ctx, r), true)
	if err != nil {
		var zero R
		return zero, err
	}
	got, err := next.Of[R](ctx).Register(ctx, r)
	if err != nil && claimed {
		a.forget(r.GetName())
	}
	return got, err
}

func (a *authorize[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	return next.Of[R](ctx).Find(ctx, q, send)
}

func (a *authorize[R]) Unregister(ctx context.Context, r R) error {
	if a.any {
		return next.Of[R](ctx).Unregister(ctx, r)
	}
	if _, err := a.check(r.GetName(), identity(ctx, r), false); err != nil {
		return err
	}
	if err := next.Of[R](ctx).Unregister(ctx, r); err != nil {
		return err
	}
	a.forget(r.GetName())
	return nil
}
