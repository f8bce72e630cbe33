// Package metadata keeps per-connection state for the elements of a chain: an element declares a
// typed Key once and loads and stores its value in the connection's Map, instead of keeping a map
// of its own keyed by connection ID.
//
// The metadata element makes a connection's Map on its first Request and drops it when that
// Request fails or when the connection is closed, so state kept here can never outlive its
// connection. It belongs after begin, which serializes a connection's events, and before every
// element that uses Server(ctx) or Client(ctx). Server and client chains in one process (an
// nsmgr has both) keep separate maps.
package metadata

import (
	"context"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// Map is one connection's state: values stored under keys.
type Map struct {
	mu     sync.Mutex
	values map[any]any
}

// Key names one element's value of type T in a connection's Map.
type Key[T any] struct{ name string }

// NewKey returns a key; name is for people reading a debugger, identity is the pointer.
func NewKey[T any](name string) *Key[T] { return &Key[T]{name: name} }

// String returns the key's name.
func (k *Key[T]) String() string { return k.name }

// Load returns the value stored under k, if any.
func (k *Key[T]) Load(m *Map) (T, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.values[k].(T)
	return v, ok
}

// Store sets the value under k.
func (k *Key[T]) Store(m *Map, v T) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.values[k] = v
}

// LoadOrStore returns the value under k if there is one, else stores v and returns it; loaded
// says which.
func (k *Key[T]) LoadOrStore(m *Map, v T) (actual T, loaded bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.values[k].(T); ok {
		return cur, true
	}
	m.values[k] = v
	return v, false
}

// LoadAndDelete removes the value under k and returns it, if there was one.
func (k *Key[T]) LoadAndDelete(m *Map) (T, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.values[k].(T)
	delete(m.values, k)
	return v, ok
}

// Delete removes the value under k.
func (k *Key[T]) Delete(m *Map) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.values, k)
}

type serverSide struct{}

type clientSide struct{}

// Server returns the Map of the connection being handled by the server chain ctx is in.
// It panics if the chain has no metadata server before the caller: a composition bug.
func Server(ctx context.Context) *Map { return mapFrom(ctx, serverSide{}) }

// Client returns the Map of the connection being handled by the client chain ctx is in.
// It panics if the chain has no metadata client before the caller: a composition bug.
func Client(ctx context.Context) *Map { return mapFrom(ctx, clientSide{}) }

func mapFrom(ctx context.Context, side any) *Map {
	m, ok := ctx.Value(side).(*Map)
	if !ok {
		panic("metadata: no metadata element before this one in the chain")
	}
	return m
}

// NewServer returns the element that gives each connection of a server chain its Map.
func NewServer() networkservice.NetworkServiceServer {
	return &store{side: serverSide{}, maps: map[string]*Map{}}
}

// NewClient returns the element that gives each connection of a client chain its Map.
func NewClient() networkservice.NetworkServiceClient {
	return adapters.NewServerToClient(&store{side: clientSide{}, maps: map[string]*Map{}})
}

type store struct {
	side any
	mu   sync.Mutex
	maps map[string]*Map
}

func (s *store) get(id string) (m *Map, loaded bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.maps[id]; ok {
		return m, true
	}
	m = &Map{values: map[any]any{}}
	s.maps[id] = m
	return m, false
}

func (s *store) drop(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.maps, id)
}

func (s *store) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	id := req.GetConnection().GetId()
	m, loaded := s.get(id)
	conn, err := next.Server(ctx).Request(context.WithValue(ctx, s.side, m), req)
	if err != nil && !loaded {
		s.drop(id)
	}
	return conn, err
}

func (s *store) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	m, _ := s.get(conn.GetId())
	defer s.drop(conn.GetId())
	return next.Server(ctx).Close(context.WithValue(ctx, s.side, m), conn)
}
