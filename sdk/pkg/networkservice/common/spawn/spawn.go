// Package spawn is the heart of a supplier endpoint, which makes scale from zero work: a network
// service's matches send a client to the supplier only when no endpoint of the service runs on
// the client's node; the supplier starts one there and tells the client to ask again, and the
// client's retry (or heal) then reaches the new endpoint through the first match.
//
// The supplier never carries the client's traffic: it answers every Request with Unavailable
// (which retry, roundrobin and heal all treat as "ask again"), after Start has returned, that is
// once the new endpoint is registered and a new request can find it. The endpoint it starts
// retires by itself when idle (package onidle). Requests for the same node and service while a
// start is under way wait for it instead of starting a second endpoint.
package spawn

import (
	"context"
	"fmt"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/clientinfo"
)

// Start starts an endpoint of networkService on node and returns once it is registered.
type Start func(ctx context.Context, node, networkService string) error

// NewServer returns the supplier element; it ends a chain.
func NewServer(start Start) networkservice.NetworkServiceServer {
	if start == nil {
		panic("spawn.NewServer: nil Start")
	}
	return &server{start: start, running: map[string]*startup{}}
}

type server struct {
	start   Start
	mu      sync.Mutex
	running map[string]*startup // by node and service, while a start is under way
}

// startup is one start under way; its waiters read err once done is closed.
type startup struct {
	done chan struct{}
	err  error
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn := req.GetConnection()
	node := conn.GetLabels()[clientinfo.NodeNameLabel]
	if node == "" {
		return nil, status.Errorf(codes.InvalidArgument,
			"spawn: connection %q has no %q label, so there is no node to start an endpoint of %q on; add clientinfo to the client",
			conn.GetId(), clientinfo.NodeNameLabel, conn.GetNetworkService())
	}
	if err := s.startOnce(ctx, node, conn.GetNetworkService()); err != nil {
		return nil, status.Errorf(codes.Unavailable, "spawn: starting an endpoint of %q on node %q: %v", conn.GetNetworkService(), node, err)
	}
	return nil, status.Errorf(codes.Unavailable,
		"spawn: started an endpoint of %q on node %q; request again to reach it", conn.GetNetworkService(), node)
}

// startOnce starts an endpoint for node and service, or waits for the start under way.
func (s *server) startOnce(ctx context.Context, node, service string) error {
	key := fmt.Sprintf("%s\x00%s", node, service)
	s.mu.Lock()
	st, waiting := s.running[key]
	if !waiting {
		st = &startup{done: make(chan struct{})}
		s.running[key] = st
	}
	s.mu.Unlock()
	if !waiting {
		st.err = s.start(ctx, node, service)
		s.mu.Lock()
		delete(s.running, key)
		s.mu.Unlock()
		close(st.done)
	}
	select {
	case <-st.done:
		return st.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close has nothing to undo: the supplier never holds a connection.
func (s *server) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}
