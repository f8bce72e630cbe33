// Package checks provides test elements that record what reaches them, so a test can assert on
// the request an element passed on and on the Closes that followed.
package checks

import (
	"context"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// Recorder is a server that keeps a copy of every Request and Close it sees, and passes them on.
type Recorder struct {
	mu       sync.Mutex
	requests []*networkservice.NetworkServiceRequest
	closes   []*networkservice.Connection
	open     map[string]bool
}

// NewServer returns an empty Recorder.
func NewServer() *Recorder { return &Recorder{open: map[string]bool{}} }

// Request records req and passes it on.
func (r *Recorder) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	r.mu.Lock()
	r.requests = append(r.requests, req.Clone())
	r.mu.Unlock()
	conn, err := next.Server(ctx).Request(ctx, req)
	if err == nil {
		r.mu.Lock()
		r.open[conn.GetId()] = true
		r.mu.Unlock()
	}
	return conn, err
}

// Close records conn and passes it on.
func (r *Recorder) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	r.mu.Lock()
	r.closes = append(r.closes, conn.Clone())
	delete(r.open, conn.GetId())
	r.mu.Unlock()
	return next.Server(ctx).Close(ctx, conn)
}

// Requests returns copies of the requests seen so far.
func (r *Recorder) Requests() []*networkservice.NetworkServiceRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*networkservice.NetworkServiceRequest(nil), r.requests...)
}

// Closes returns copies of the connections closed so far.
func (r *Recorder) Closes() []*networkservice.Connection {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*networkservice.Connection(nil), r.closes...)
}

// Open returns the IDs of connections requested successfully and not closed since.
func (r *Recorder) Open() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.open))
	for id := range r.open {
		ids = append(ids, id)
	}
	return ids
}

// PathNames returns the names of conn's path segments, in order: the hops it went through, for
// a test to compare with the path it expects.
func PathNames(conn *networkservice.Connection) []string {
	var out []string
	for _, s := range conn.GetPath().GetPathSegments() {
		out = append(out, s.GetName())
	}
	return out
}
