// Package adapters turns a server element into a client element and back, so a behaviour written
// once for one side can sit in a chain of the other. The adapted element's call to next continues
// into the chain it was placed in; gRPC call options do not cross the adapter.
package adapters

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// NewServerToClient returns a client that runs s and then the rest of the client chain.
func NewServerToClient(s networkservice.NetworkServiceServer) networkservice.NetworkServiceClient {
	return &serverToClient{server: s}
}

// NewClientToServer returns a server that runs c and then the rest of the server chain.
func NewClientToServer(c networkservice.NetworkServiceClient) networkservice.NetworkServiceServer {
	return &clientToServer{client: c}
}

type serverToClient struct {
	server networkservice.NetworkServiceServer
}

func (a *serverToClient) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	rest := &clientAsServer{client: next.Client(ctx), opts: opts}
	return a.server.Request(next.WithServer(ctx, rest), req)
}

func (a *serverToClient) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	rest := &clientAsServer{client: next.Client(ctx), opts: opts}
	return a.server.Close(next.WithServer(ctx, rest), conn)
}

// clientAsServer lets a server element call the rest of a client chain as its next.
type clientAsServer struct {
	client networkservice.NetworkServiceClient
	opts   []grpc.CallOption
}

func (c *clientAsServer) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return c.client.Request(ctx, req, c.opts...)
}

func (c *clientAsServer) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return c.client.Close(ctx, conn, c.opts...)
}

type clientToServer struct {
	client networkservice.NetworkServiceClient
}

func (a *clientToServer) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return a.client.Request(next.WithClient(ctx, &serverAsClient{server: next.Server(ctx)}), req)
}

func (a *clientToServer) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return a.client.Close(next.WithClient(ctx, &serverAsClient{server: next.Server(ctx)}), conn)
}

// serverAsClient lets a client element call the rest of a server chain as its next.
type serverAsClient struct {
	server networkservice.NetworkServiceServer
}

func (s *serverAsClient) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, _ ...grpc.CallOption) (*networkservice.Connection, error) {
	return s.server.Request(ctx, req)
}

func (s *serverAsClient) Close(ctx context.Context, conn *networkservice.Connection, _ ...grpc.CallOption) (*emptypb.Empty, error) {
	return s.server.Close(ctx, conn)
}
