// Package checks provides a registry test element that records what passes it and what the rest
// of the chain answered, so a test can assert on the record an element passed on, count the
// attempts a background element made, or wait until one of them has ended. It is the registry
// twin of networkservice/utils/checks, written once for network services and endpoints.
//
// A call is recorded when the rest of the chain has answered it (a watch: when it ends), with a
// copy of the record or query as it came in and the error; the record the caller passed is not
// kept, so later changes to it do not show.
package checks

import (
	"context"
	"slices"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/protobuf/proto"

	"vwire.dev/sdk/pkg/registry/core/next"
)

// Call is one Register, Find or Unregister that passed the recorder.
type Call[R next.Record] struct {
	Record R     // a copy of the record (Find: of the query's record) as it came in
	Watch  bool  // a Find that watched
	Err    error // what the rest of the chain answered
}

// Recorder is an element that keeps every call it passes on, with its answer.
type Recorder[R next.Record] struct {
	mu          sync.Mutex
	registers   []Call[R]
	finds       []Call[R]
	unregisters []Call[R]
	registered  map[string]bool
}

// NewNS returns an empty Recorder for network services.
func NewNS() *Recorder[*registry.NetworkService] { return newRecorder[*registry.NetworkService]() }

// NewNSE returns an empty Recorder for network service endpoints.
func NewNSE() *Recorder[*registry.NetworkServiceEndpoint] {
	return newRecorder[*registry.NetworkServiceEndpoint]()
}

func newRecorder[R next.Record]() *Recorder[R] { return &Recorder[R]{registered: map[string]bool{}} }

// clone copies r; a nil record stays nil.
func clone[R next.Record](r R) R { return proto.Clone(r).(R) }

// Register passes r on and records it with the answer.
func (c *Recorder[R]) Register(ctx context.Context, r R) (R, error) {
	in := clone(r)
	got, err := next.Of[R](ctx).Register(ctx, r)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.registers = append(c.registers, Call[R]{Record: in, Err: err})
	if err == nil {
		c.registered[in.GetName()] = true
	}
	return got, err
}

// Find passes q on and records it with the answer once it ended.
func (c *Recorder[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	in := Call[R]{Record: clone(q.Record), Watch: q.Watch}
	in.Err = next.Of[R](ctx).Find(ctx, q, send)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finds = append(c.finds, in)
	return in.Err
}

// Unregister passes r on and records it with the answer.
func (c *Recorder[R]) Unregister(ctx context.Context, r R) error {
	in := clone(r)
	err := next.Of[R](ctx).Unregister(ctx, r)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unregisters = append(c.unregisters, Call[R]{Record: in, Err: err})
	delete(c.registered, in.GetName())
	return err
}

// Registers returns the Registers answered so far, in the order of their answers.
func (c *Recorder[R]) Registers() []Call[R] {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.registers)
}

// Finds returns the Finds ended so far, in the order they ended.
func (c *Recorder[R]) Finds() []Call[R] {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.finds)
}

// Unregisters returns the Unregisters answered so far, in the order of their answers.
func (c *Recorder[R]) Unregisters() []Call[R] {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.unregisters)
}

// Registered returns, sorted, the names registered successfully and not unregistered since.
func (c *Recorder[R]) Registered() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.registered))
	for name := range c.registered {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
