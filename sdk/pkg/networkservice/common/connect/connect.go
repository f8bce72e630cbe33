// Package connect sends a Request or Close to the next hop: the client element is the last
// element of a client chain and calls the next hop over the connection dial made; the server
// element ends the server chain of a passthrough component (nsmgr, forwarder) by handing each
// Request and Close to such a client chain.
//
// A passthrough component serves its caller with a server chain and reaches the next hop with a
// client chain of its own (begin, metadata, discovery or clienturl, dial, ..., connect). The
// server element joins the two: the client chain gets a copy of the request, and the connection
// the next hop returned continues through the rest of the server chain, which at its end returns
// it to the caller.
//
// Guarantees:
//   - Errors from the next hop keep their gRPC code and details; their message is prefixed with
//     the next hop's URL, so an error says which hop failed (a next hop that cannot be reached
//     is Unavailable, with the transport's reason).
//   - The server element closes what the client chain opened when the rest of the server chain
//     fails, with the caller's values and a fresh deadline; its Close goes to the client chain and
//     then to the rest of the server chain even if the first fails.
package connect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// NewClient returns the element that sends each Request and Close over dial.ClientConn to the
// next hop. It is the last element of its chain: it does not call next.
func NewClient() networkservice.NetworkServiceClient { return client{} }

type client struct{}

const noConn = "connect: no connection to a next hop in the context; put dial before connect in the client chain"

func (client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	cc := dial.ClientConn(ctx)
	if cc == nil {
		return nil, status.Error(codes.Internal, noConn)
	}
	conn, err := networkservice.NewNetworkServiceClient(cc).Request(ctx, req, opts...)
	if err != nil {
		return nil, fromHop(ctx, err)
	}
	return conn, nil
}

func (client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	cc := dial.ClientConn(ctx)
	if cc == nil {
		return nil, status.Error(codes.Internal, noConn)
	}
	resp, err := networkservice.NewNetworkServiceClient(cc).Close(ctx, conn, opts...)
	if err != nil {
		return nil, fromHop(ctx, err)
	}
	return resp, nil
}

// fromHop names the next hop in err's message, keeping its code and details.
func fromHop(ctx context.Context, err error) error {
	p := status.Convert(err).Proto()
	p.Message = fmt.Sprintf("connect: next hop %s: %s", clienturl.ClientURL(ctx), p.GetMessage())
	return status.ErrorProto(p)
}

// NewServer returns the element that hands each Request and Close of its server chain to c, a
// client chain that reaches the next hop, and continues the server chain with the connection
// the next hop returned.
func NewServer(c networkservice.NetworkServiceClient) networkservice.NetworkServiceServer {
	if c == nil {
		panic("connect: NewServer needs a client chain, got nil")
	}
	return &server{client: c}
}

type server struct {
	client networkservice.NetworkServiceClient
}

// undoTimeout bounds the undo Close when the caller's context has no deadline.
const undoTimeout = 15 * time.Second

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	budget := undoTimeout
	if d, ok := ctx.Deadline(); ok {
		budget = time.Until(d)
	}
	conn, err := s.client.Request(alone(ctx), req.Clone())
	if err != nil {
		return nil, err
	}
	req.Connection = conn
	out, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
		defer cancel()
		_, _ = s.client.Close(alone(undo), conn.Clone())
		return nil, err
	}
	return out, nil
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	_, clientErr := s.client.Close(alone(ctx), conn.Clone())
	resp, serverErr := next.Server(ctx).Close(ctx, conn)
	switch {
	case clientErr == nil && serverErr == nil:
		return resp, nil
	case serverErr == nil: // alone, as it is: joined, its status message would repeat "rpc error: code = ..."
		return nil, clientErr
	case clientErr == nil:
		return nil, serverErr
	}
	return nil, errors.Join(clientErr, serverErr)
}

// alone returns ctx for calling a client chain that is complete in itself: nothing follows it,
// even if ctx came through a client chain of its own.
func alone(ctx context.Context) context.Context {
	return next.WithClient(ctx, nil)
}
