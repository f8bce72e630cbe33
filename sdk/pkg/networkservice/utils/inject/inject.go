// Package inject provides test elements that make the rest of a chain fail, for testing what an
// element undoes when the next one fails.
package inject

import (
	"context"
	"sync/atomic"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// Errors is a server that fails Requests (and, with closeErr, Closes) with the errors it is set
// to; a nil error lets the call through. It is safe to change from another goroutine.
type Errors struct {
	requestErr atomic.Pointer[error]
	closeErr   atomic.Pointer[error]
}

// NewServer returns an element that fails Request with requestErr (nil: pass through).
func NewServer(requestErr error) *Errors {
	e := &Errors{}
	e.FailRequests(requestErr)
	return e
}

// FailRequests makes later Requests fail with err, or pass if err is nil.
func (e *Errors) FailRequests(err error) { e.requestErr.Store(&err) }

// FailCloses makes later Closes fail with err (after calling next), or pass if err is nil.
func (e *Errors) FailCloses(err error) { e.closeErr.Store(&err) }

// Request fails or passes the request on.
func (e *Errors) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if p := e.requestErr.Load(); p != nil && *p != nil {
		return nil, *p
	}
	return next.Server(ctx).Request(ctx, req)
}

// Close passes the connection on, then fails if told to.
func (e *Errors) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	r, err := next.Server(ctx).Close(ctx, conn)
	if p := e.closeErr.Load(); p != nil && *p != nil {
		return nil, *p
	}
	return r, err
}
