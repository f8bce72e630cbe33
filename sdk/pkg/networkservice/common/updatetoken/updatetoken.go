// Package updatetoken puts this hop's token in its own path segment, and on a server the token
// the caller sent with the call in the caller's segment.
//
// Every hop of a connection signs for itself: before next, the element asks its generator for a
// token (given the transport's view of the peer, from grpc's peer.FromContext, nil in-process)
// and writes it with its expiry into the segment at the path index. On a server, the caller's
// segment (index-1) takes the token and expiry the caller sent as per-RPC credentials
// (token.FromIncomingContext), when it sent them: that is the token the transport carried, so
// authorize, after this element, checks it rather than what the caller wrote in the path. A
// client does only the first step.
//
// It belongs after updatepath (which makes the segment at the index this hop's) and before
// authorize and timeout (which read the tokens). Close refreshes the tokens too, so that the
// hops after this one see live tokens, but is never refused: if the generator fails on Close,
// the Close goes on with the tokens it has.
package updatetoken

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/token"
)

// NewServer returns updatetoken for a server chain, signing with gen.
func NewServer(gen token.GeneratorFunc) networkservice.NetworkServiceServer {
	if gen == nil {
		panic("updatetoken: NewServer needs a token generator")
	}
	return &server{gen: gen, fromCaller: true}
}

// NewClient returns updatetoken for a client chain, signing with gen.
func NewClient(gen token.GeneratorFunc) networkservice.NetworkServiceClient {
	if gen == nil {
		panic("updatetoken: NewClient needs a token generator")
	}
	return adapters.NewServerToClient(&server{gen: gen})
}

type server struct {
	gen        token.GeneratorFunc
	fromCaller bool // fill the caller's segment from the call's credentials
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if err := s.update(ctx, req.GetConnection()); err != nil {
		return nil, err
	}
	return next.Server(ctx).Request(ctx, req)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if err := s.update(ctx, conn); err != nil {
		log.FromContext(ctx).Warn("closing with the tokens the connection has", "error", err)
	}
	return next.Server(ctx).Close(ctx, conn)
}

func (s *server) update(ctx context.Context, conn *networkservice.Connection) error {
	path := conn.GetPath()
	segments := path.GetPathSegments()
	index := int(path.GetIndex())
	if index >= len(segments) {
		return status.Errorf(codes.InvalidArgument,
			"updatetoken: path index %d is outside the path of %d segments: put updatepath before updatetoken",
			index, len(segments))
	}
	if s.fromCaller && index > 0 {
		if tok, expires, ok := token.FromIncomingContext(ctx); ok {
			segments[index-1].Token, segments[index-1].Expires = tok, timestamppb.New(expires)
		}
	}
	var authInfo credentials.AuthInfo
	if p, ok := peer.FromContext(ctx); ok {
		authInfo = p.AuthInfo
	}
	tok, expires, err := s.gen(authInfo)
	if err != nil {
		return status.Errorf(codes.Internal, "updatetoken: make the token of %s: %v", segments[index].GetName(), err)
	}
	segments[index].Token, segments[index].Expires = tok, timestamppb.New(expires)
	return nil
}
