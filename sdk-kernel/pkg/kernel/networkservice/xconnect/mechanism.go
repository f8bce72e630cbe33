package xconnect

import (
	"context"
	"errors"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// This file holds what every mechanism element does with the end it makes, written once: keep
// it in the connection's metadata with its end in Ends, undo a first Request whose end failed,
// and remove it (on Close, or when the next hop chose another mechanism). A server's elements
// make the end In, a client's the end Out.

// Side names one of a connection's two ends.
type Side int

const (
	In  Side = iota // facing the previous hop: made by the server's mechanism elements
	Out             // facing the next hop: made by the client's mechanism elements
)

// Made is what a mechanism element keeps per connection in metadata: what it made, with its end.
type Made interface {
	comparable
	End() *End
}

// undoTimeout bounds the Close that undoes a first Request whose end (or join) failed.
const undoTimeout = 15 * time.Second

// KeepServer ends the Request of a server's mechanism element once next returned conn and the
// element made its end: it keeps now under key and puts its end In (a zero now says that nothing
// stands: the key is deleted and the end cleared), and returns conn. If making the end failed
// (err), it returns err instead, after closing conn through the rest of the chain (the caller's
// values, a fresh deadline) unless the Request is a refresh, which keeps the connection as it was.
func KeepServer[T Made](ctx context.Context, conn *networkservice.Connection, key *metadata.Key[T], refresh bool, now T, err error) (*networkservice.Connection, error) {
	keep(ctx, metadata.Server(ctx), key, In, now)
	if err != nil && !refresh {
		undoServer(ctx, conn)
	}
	return result(conn, err)
}

// KeepClient is KeepServer for a client's mechanism element (its end Out).
func KeepClient[T Made](ctx context.Context, conn *networkservice.Connection, key *metadata.Key[T], refresh bool, now T, err error, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	keep(ctx, metadata.Client(ctx), key, Out, now)
	if err != nil && !refresh {
		undoClient(ctx, conn, opts...)
	}
	return result(conn, err)
}

// Forget deletes what key holds in m, clears its end on side if it is still there, and removes
// it with remove (the element's own, which knows where it made it). With nothing kept it does
// nothing and returns nil.
func Forget[T Made](ctx context.Context, m *metadata.Map, key *metadata.Key[T], side Side, remove func(T) error) error {
	if old, ok := drop(ctx, m, key, side); ok {
		return remove(old)
	}
	return nil
}

// CloseServer is the Close of a server's mechanism element: it forgets, with remove, what key
// holds for the connection (its end In), then closes conn through the rest of the chain even if
// removing failed, and returns both errors.
func CloseServer[T Made](ctx context.Context, conn *networkservice.Connection, key *metadata.Key[T], remove func(T) error) (*emptypb.Empty, error) {
	removeErr := Forget(ctx, metadata.Server(ctx), key, In, remove)
	resp, err := next.Server(ctx).Close(ctx, conn)
	return result(resp, errors.Join(removeErr, err))
}

// CloseClient is CloseServer for a client's mechanism element (its end Out).
func CloseClient[T Made](ctx context.Context, conn *networkservice.Connection, key *metadata.Key[T], remove func(T) error, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	removeErr := Forget(ctx, metadata.Client(ctx), key, Out, remove)
	resp, err := next.Client(ctx).Close(ctx, conn, opts...)
	return result(resp, errors.Join(removeErr, err))
}

// keep stores now under key in m and puts its end on side of the connection's Ends (if ctx has
// them). A zero now says that nothing stands: the key is deleted, and the end it held cleared.
func keep[T Made](ctx context.Context, m *metadata.Map, key *metadata.Key[T], side Side, now T) {
	var none T
	if now == none {
		drop(ctx, m, key, side)
		return
	}
	key.Store(m, now)
	if ends := FromContext(ctx); ends != nil {
		*ends.at(side) = now.End()
	}
}

// drop deletes what key holds in m and clears its end on side, if it is still there; it returns
// what it deleted.
func drop[T Made](ctx context.Context, m *metadata.Map, key *metadata.Key[T], side Side) (T, bool) {
	old, ok := key.LoadAndDelete(m)
	if ends := FromContext(ctx); ok && ends != nil && *ends.at(side) == old.End() {
		*ends.at(side) = nil
	}
	return old, ok
}

func (e *Ends) at(side Side) **End {
	if side == In {
		return &e.In
	}
	return &e.Out
}

// undoServer closes conn through the rest of a server chain, with ctx's values and a fresh
// deadline (ctx's may be spent).
func undoServer(ctx context.Context, conn *networkservice.Connection) {
	undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	_, _ = next.Server(undo).Close(undo, conn)
}

// undoClient is undoServer for a client chain.
func undoClient(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) {
	undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	_, _ = next.Client(undo).Close(undo, conn, opts...)
}

// result is what an element returns: resp, or only err if there is one.
func result[R any](resp *R, err error) (*R, error) {
	if err != nil {
		return nil, err
	}
	return resp, nil
}
