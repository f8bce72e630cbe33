// Package updatepath adds this hop's id to the path_ids of every record registered or
// unregistered through it, so that the elements after it (authorize, the store) know the way a
// registration came.
//
// NSM's registry records carry path_ids: the ids of the hops a Register crossed, the registrant
// first (NSM uses SPIFFE IDs; any stable id of the hop will do, such as its name). Before next,
// the element passes on a copy of the record in which:
//   - if the id is not in path_ids, it is appended (a first pass through this hop);
//   - if it is, the ids after it are dropped, because the same path is being taken again (a
//     refresh, a retry, a record that came back from Find) and the hops after this one add
//     themselves again.
//
// The caller's record is left as it was. Find is passed on untouched. NSM places the id at an
// index it carries in gRPC metadata; vwire keeps the ids only, which gives the same list on a
// path without loops.
//
// Updatepath belongs first in a chain, before begin and authorize, in servers and clients alike
// (a component whose server and client chains both carry its id appears once).
package updatepath

import (
	"context"
	"slices"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/protobuf/proto"

	"vwire.dev/sdk/pkg/registry/core/next"
)

// NewNS returns updatepath for network services, adding id.
func NewNS(id string) next.NS {
	return newUpdatepath(id, func(ns *registry.NetworkService) *[]string { return &ns.PathIds })
}

// NewNSE returns updatepath for network service endpoints, adding id.
func NewNSE(id string) next.NSE {
	return newUpdatepath(id, func(nse *registry.NetworkServiceEndpoint) *[]string { return &nse.PathIds })
}

type updatepath[R next.Record] struct {
	id  string
	ids func(R) *[]string
}

func newUpdatepath[R next.Record](id string, ids func(R) *[]string) *updatepath[R] {
	if id == "" {
		panic("updatepath: the hop id is empty")
	}
	return &updatepath[R]{id: id, ids: ids}
}

// stamp returns a copy of r whose path_ids end with u.id.
func (u *updatepath[R]) stamp(r R) R {
	if !r.ProtoReflect().IsValid() {
		return r // no record: nothing to stamp; the store refuses it
	}
	r = proto.Clone(r).(R)
	ids := u.ids(r)
	if i := slices.Index(*ids, u.id); i >= 0 {
		*ids = (*ids)[:i+1]
	} else {
		*ids = append(*ids, u.id)
	}
	return r
}

func (u *updatepath[R]) Register(ctx context.Context, r R) (R, error) {
	return next.Of[R](ctx).Register(ctx, u.stamp(r))
}

func (u *updatepath[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	return next.Of[R](ctx).Find(ctx, q, send)
}

func (u *updatepath[R]) Unregister(ctx context.Context, r R) error {
	return next.Of[R](ctx).Unregister(ctx, u.stamp(r))
}
