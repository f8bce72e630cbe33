// Package updatepath keeps the way a registration came: the record's path_ids, and the path of
// the callers with their tokens that authorize judges.
//
// path_ids: the element adds this hop's id to a copy of the record (NSM's records carry the ids
// of the hops a Register crossed, the registrant first). If the id is in path_ids already, the
// ids after it are dropped: the same path is being taken again (a refresh, a retry, a record that
// came back from Find) and the hops after this one add themselves again. The caller's record is
// left as it was. path_ids as a caller sends them prove nothing (it writes what it likes): a
// registry with an identity stores, instead, the path it verified (registry/common/authorize).
//
// The path: who registers is proved by tokens, carried as NSM carries them. Each caller sends its
// own token with every call (per-RPC credentials, nsm-client-token: token.NewPerRPCCredentials on
// the client connection), signed by its SVID's key with the callee as audience; and a hop that
// passes a registration on (an nsmgr, for the endpoints of its node) sends the path of the callers
// before it in gRPC metadata under "path", as JSON: {"Index": <the sender's segment>,
// "PathSegments": [{"token": ..., "x5c": [<base64 DER certificates, leaf first>]}]}.
// On the server side of a gRPC call (incoming metadata in the context) updatepath reads that
// path, keeps the segments before the sender's index and puts the sender's own segment there: the
// token of its call and the certificates it presented in mTLS (from the transport, not from the
// sender). So, at each hop, the last segment is the caller seen by the transport and each one
// before it is a hop that the following hop saw the same way. The path goes into the context
// (FromContext) for the elements after it, and into the outgoing metadata, so that a call the
// rest of the chain makes to the next registry with this context carries it on. NSM's senders
// name their own segment at Index, vwire's send Index = len(PathSegments); both read the same.
// The client side of a call adds nothing to the path: the first caller is known by its token.
//
// A malformed path is refused with InvalidArgument before anything happens. Find is passed on
// untouched: queries are not authorized.
//
// Updatepath belongs first in a chain, before begin and authorize, in servers and clients alike
// (a component whose server and client chains both carry its id appears once in path_ids).
package updatepath

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/token"
)

// MetadataKey is the gRPC metadata key of the path, NSM's.
const MetadataKey = "path"

// maxSegments bounds the path a caller may send: a registration crosses an nsmgr or two.
const maxSegments = 16

// Path is the callers of a registry call, the first caller (the registrant) first.
type Path struct {
	Index    uint32     `json:"Index"`
	Segments []*Segment `json:"PathSegments"`
}

// Segment is one caller: the token it sent with its call.
type Segment struct {
	Token string `json:"token"`
}

type pathKey struct{}

// FromContext returns the path of the call ctx belongs to, as updatepath read it on the server
// side, or nil on the client side and outside gRPC calls.
func FromContext(ctx context.Context) *Path {
	p, _ := ctx.Value(pathKey{}).(*Path)
	return p
}

// WithPath returns ctx in which the path is p, as updatepath would set it for a call that came
// with it: for tests of elements that read the path.
func WithPath(ctx context.Context, p *Path) context.Context {
	return context.WithValue(ctx, pathKey{}, p)
}

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
	ctx, err := withCallers(ctx)
	if err != nil {
		var zero R
		return zero, err
	}
	return next.Of[R](ctx).Register(ctx, u.stamp(r))
}

func (u *updatepath[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	return next.Of[R](ctx).Find(ctx, q, send)
}

func (u *updatepath[R]) Unregister(ctx context.Context, r R) error {
	ctx, err := withCallers(ctx)
	if err != nil {
		return err
	}
	return next.Of[R](ctx).Unregister(ctx, u.stamp(r))
}

// withCallers returns ctx with the path of a gRPC call that reached this server, and that path
// in the outgoing metadata; other contexts (a client's call, a path read already by an element
// before this one in the same component) as they are.
func withCallers(ctx context.Context) (context.Context, error) {
	if FromContext(ctx) != nil {
		return ctx, nil
	}
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx, nil
	}
	p, err := received(md)
	if err != nil {
		return nil, err
	}
	tok, _, _ := token.FromIncomingContext(ctx) // none: an empty token, which authorize refuses
	p.Segments = append(p.Segments[:p.Index], &Segment{Token: tok})
	wire, err := json.Marshal(&Path{Index: uint32(len(p.Segments)), Segments: p.Segments})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "updatepath: encode the path: %v", err)
	}
	// The caller's outgoing metadata must not reach the next registry: only ours.
	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(MetadataKey, string(wire)))
	return WithPath(ctx, p), nil
}

// received decodes the path a caller sent in md: none is the empty path.
func received(md metadata.MD) (*Path, error) {
	values := md.Get(MetadataKey)
	p := &Path{}
	switch {
	case len(values) == 0:
		return p, nil
	case len(values) > 1:
		return nil, status.Errorf(codes.InvalidArgument, "updatepath: metadata %q came %d times; send one path", MetadataKey, len(values))
	}
	if err := json.Unmarshal([]byte(values[0]), p); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "updatepath: metadata %q is not a path (JSON with Index and PathSegments): %v", MetadataKey, err)
	}
	if len(p.Segments) > maxSegments {
		return nil, status.Errorf(codes.InvalidArgument, "updatepath: the path of metadata %q has %d segments, more than %d", MetadataKey, len(p.Segments), maxSegments)
	}
	if int(p.Index) > len(p.Segments) {
		return nil, status.Errorf(codes.InvalidArgument, "updatepath: the path of metadata %q names segment %d as its sender's but has %d", MetadataKey, p.Index, len(p.Segments))
	}
	for i, seg := range p.Segments {
		if seg == nil {
			return nil, status.Errorf(codes.InvalidArgument, "updatepath: segment %d of the path of metadata %q is null", i, MetadataKey)
		}
	}
	return p, nil
}
