// Package updatepath gives each hop of a connection its own segment in the connection's path,
// and the connection the ID of that segment while the request is in this hop.
//
// A connection's path lists the hops it crosses (client, managers, forwarders, endpoint), each
// segment with the hop's name, its ID for the connection, and its token; path.index is the hop
// now handling it. Before next, the element finds or adds the segment of this hop (named by
// NewServer's name), following NSM's rules so that mixed meshes agree:
//   - no path yet: the path starts with this hop's segment (the connection's ID if it has one,
//     else a new one);
//   - the segment at the index is this hop's (a refresh, or a server and client of one
//     component): keep it;
//   - the next segment is this hop's (a refresh through this hop): move the index to it;
//   - otherwise (a first request, or a new hop after heal picked another one): this hop takes
//     the next segment with a new ID, appending it at the end of the path or replacing the
//     segment of the hop it displaced; segments after it are kept, so hops further on still
//     find theirs. With WithSuccession, a hop that displaces another keeps the displaced
//     segment's ID instead: it succeeds that hop in the connection.
//
// The connection's ID becomes this hop's segment ID, which is what begin, metadata and every
// per-connection element key on: updatepath belongs first in a chain. After next returns, the
// index and ID are put back as the request brought them, so the caller sees its own segment.
// A caller's index outside its path, or a connection ID that is not the ID of the caller's
// segment, is answered with InvalidArgument. Close takes the same steps, without putting back.
//
// The client (NewClient) is the same element in a client chain: a client starts the path, and
// the client chain of a manager finds the segment its own server side already made.
package updatepath

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// undoTimeout bounds the Close that undoes a Request whose reply came back unusable.
const undoTimeout = 15 * time.Second

// Option configures the server.
type Option func(*server)

// WithSuccession makes this hop, when it displaces another hop's segment, take over that
// segment's ID: the connection keeps its ID at this place of the path. A kernel forwarder that
// replaces a dead one (a new pod of a DaemonSet, with a name of its own; another forwarder of
// the node) so finds what its predecessor built for the connection, named after that ID, and
// adopts it instead of building a second vWire beside it.
func WithSuccession() Option { return func(s *server) { s.succession = true } }

// NewServer returns updatepath for the component called name (unique in the mesh).
func NewServer(name string, opts ...Option) networkservice.NetworkServiceServer {
	if name == "" {
		panic("updatepath: NewServer needs the name of this component")
	}
	s := &server{name: name}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

// NewClient returns updatepath for the client chain of the component called name.
func NewClient(name string) networkservice.NetworkServiceClient {
	if name == "" {
		panic("updatepath: NewClient needs the name of this component")
	}
	return adapters.NewServerToClient(&server{name: name})
}

type server struct {
	name       string
	succession bool
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if req.GetConnection() == nil {
		req.Connection = &networkservice.Connection{}
	}
	callerIndex, err := s.update(req.GetConnection())
	if err != nil {
		return nil, err
	}
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, err
	}
	segments := conn.GetPath().GetPathSegments()
	if int(callerIndex) >= len(segments) {
		undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		_, _ = next.Server(undo).Close(undo, conn)
		return nil, status.Errorf(codes.Internal,
			"updatepath: %s: the reply's path has %d segments, no segment %d of the caller: a later element cut the path",
			s.name, len(segments), callerIndex)
	}
	conn.Path.Index = callerIndex
	conn.Id = segments[callerIndex].GetId()
	return conn, nil
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if _, err := s.update(conn); err != nil {
		return nil, err
	}
	return next.Server(ctx).Close(ctx, conn)
}

// update makes the segment at conn's path index this hop's and conn's ID its ID. It returns the
// index the connection came with (0 for a new path).
func (s *server) update(conn *networkservice.Connection) (uint32, error) {
	if conn.GetPath() == nil {
		conn.Path = &networkservice.Path{}
	}
	path := conn.GetPath()
	index := path.GetIndex()
	n := len(path.GetPathSegments())
	if n == 0 {
		if index != 0 {
			return 0, s.invalid("path index %d points into an empty path: send index 0", index)
		}
		if conn.GetId() == "" {
			conn.Id = uuid.NewString()
		}
		path.PathSegments = []*networkservice.PathSegment{{Name: s.name, Id: conn.GetId()}}
		return 0, nil
	}
	if int(index) >= n {
		return 0, s.invalid("path index %d is outside the path of %d segments: send the index of the caller's own segment", index, n)
	}
	mine := path.GetPathSegments()[index]
	if mine.GetName() != s.name {
		caller := mine
		if caller.GetId() != conn.GetId() {
			return 0, s.invalid("connection ID %q is not the ID %q of the caller's segment %d (%s): send the caller's segment ID",
				conn.GetId(), caller.GetId(), index, caller.GetName())
		}
		path.Index++
		switch {
		case int(path.Index) == n:
			mine = &networkservice.PathSegment{Name: s.name}
			path.PathSegments = append(path.PathSegments, mine)
		case path.GetPathSegments()[path.Index].GetName() == s.name:
			mine = path.GetPathSegments()[path.Index]
		default: // this hop displaces another: a segment of its own in its place
			mine = &networkservice.PathSegment{Name: s.name}
			if s.succession {
				mine.Id = path.GetPathSegments()[path.Index].GetId()
			}
			path.PathSegments[path.Index] = mine
		}
	}
	if mine.GetId() == "" {
		mine.Id = uuid.NewString()
	}
	conn.Id = mine.GetId()
	return index, nil
}

func (s *server) invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "updatepath: %s: %s", s.name, fmt.Sprintf(format, args...))
}
