package updatepath_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/updatepath"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func seg(name, id string) *networkservice.PathSegment {
	return &networkservice.PathSegment{Name: name, Id: id}
}

func conn(id string, index uint32, segs ...*networkservice.PathSegment) *networkservice.Connection {
	return &networkservice.Connection{Id: id, Path: &networkservice.Path{Index: index, PathSegments: segs}}
}

const newID = "<new>" // a fresh UUID, different from every ID given

func TestRequest(t *testing.T) {
	tests := []struct {
		name  string
		hop   string
		in    *networkservice.Connection
		want  []*networkservice.PathSegment // path seen by next; Id newID: a fresh UUID
		index uint32                        // index seen by next
	}{
		{
			name: "first hop, no ID", hop: "nsc",
			in:   &networkservice.Connection{},
			want: []*networkservice.PathSegment{seg("nsc", newID)}, index: 0,
		},
		{
			name: "first hop keeps the client's ID", hop: "nsc",
			in:   &networkservice.Connection{Id: "nsc-chosen"},
			want: []*networkservice.PathSegment{seg("nsc", "nsc-chosen")}, index: 0,
		},
		{
			name: "middle hop appends its segment", hop: "nsmgr",
			in:   conn("a", 0, seg("nsc", "a")),
			want: []*networkservice.PathSegment{seg("nsc", "a"), seg("nsmgr", newID)}, index: 1,
		},
		{
			name: "refresh through a middle hop finds its segment", hop: "nsmgr",
			in:   conn("a", 0, seg("nsc", "a"), seg("nsmgr", "b"), seg("nse", "c")),
			want: []*networkservice.PathSegment{seg("nsc", "a"), seg("nsmgr", "b"), seg("nse", "c")}, index: 1,
		},
		{
			name: "client chain of a manager keeps the segment its server made", hop: "nsmgr",
			in:   conn("b", 1, seg("nsc", "a"), seg("nsmgr", "b")),
			want: []*networkservice.PathSegment{seg("nsc", "a"), seg("nsmgr", "b")}, index: 1,
		},
		{
			name: "a new forwarder displaces the old one, the endpoint keeps its segment", hop: "fwd-b",
			in:   conn("b", 1, seg("nsc", "a"), seg("nsmgr", "b"), seg("fwd-a", "c"), seg("nse", "d")),
			want: []*networkservice.PathSegment{seg("nsc", "a"), seg("nsmgr", "b"), seg("fwd-b", newID), seg("nse", "d")}, index: 2,
		},
		{
			name: "own segment without an ID gets one", hop: "nsmgr",
			in:   conn("a", 0, seg("nsc", "a"), seg("nsmgr", "")),
			want: []*networkservice.PathSegment{seg("nsc", "a"), seg("nsmgr", newID)}, index: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			callerIndex, callerID := tt.in.GetPath().GetIndex(), tt.in.GetId()
			given := map[string]bool{}
			for _, s := range tt.in.GetPath().GetPathSegments() {
				given[s.GetId()] = true
			}
			rec := checks.NewServer()
			got, err := next.NewNetworkServiceServer(updatepath.NewServer(tt.hop), rec).
				Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: tt.in})
			require.NoError(t, err)

			seen := rec.Requests()[0].GetConnection()
			require.Equal(t, tt.index, seen.GetPath().GetIndex(), "next sees this hop's index")
			require.Len(t, seen.GetPath().GetPathSegments(), len(tt.want))
			for i, w := range tt.want {
				s := seen.GetPath().GetPathSegments()[i]
				require.Equal(t, w.GetName(), s.GetName(), "segment %d", i)
				if w.GetId() == newID {
					require.NoError(t, uuid.Validate(s.GetId()), "segment %d gets a UUID", i)
					require.False(t, given[s.GetId()], "segment %d gets a new ID", i)
				} else {
					require.Equal(t, w.GetId(), s.GetId(), "segment %d", i)
				}
			}
			require.Equal(t, seen.GetPath().GetPathSegments()[tt.index].GetId(), seen.GetId(), "next sees this hop's segment ID as the connection ID")

			require.Equal(t, callerIndex, got.GetPath().GetIndex(), "the caller gets its own index back")
			if callerID == "" {
				callerID = seen.GetId()
			}
			require.Equal(t, callerID, got.GetId(), "the caller gets its own ID back")
		})
	}
}

// TestSuccession: with WithSuccession, a forwarder that displaces another in the path (a new
// pod of a DaemonSet, named anew) takes over its segment's ID, so the connection is the same one
// at that place of the path; a first request still gets a new ID.
func TestSuccession(t *testing.T) {
	rec := checks.NewServer()
	chain := next.NewNetworkServiceServer(updatepath.NewServer("fwd-b", updatepath.WithSuccession()), rec)
	_, err := chain.Request(context.Background(), &networkservice.NetworkServiceRequest{
		Connection: conn("b", 1, seg("nsc", "a"), seg("nsmgr", "b"), seg("fwd-a", "c"), seg("nse", "d")),
	})
	require.NoError(t, err)
	seen := rec.Requests()[0].GetConnection()
	require.Equal(t, "c", seen.GetId(), "the successor keeps the connection's ID here")
	require.Equal(t, "fwd-b", seen.GetPath().GetPathSegments()[2].GetName())
	require.Empty(t, seen.GetPath().GetPathSegments()[2].GetToken(), "but not the predecessor's token")

	_, err = chain.Request(context.Background(), &networkservice.NetworkServiceRequest{
		Connection: conn("b", 1, seg("nsc", "a"), seg("nsmgr", "b")),
	})
	require.NoError(t, err)
	require.NoError(t, uuid.Validate(rec.Requests()[1].GetConnection().GetId()), "a first request gets a new ID")
}

func TestBadPathIsInvalidArgument(t *testing.T) {
	tests := []struct {
		name string
		in   *networkservice.Connection
		msg  string
	}{
		{"index past the end", conn("a", 3, seg("nsc", "a")), "path index 3 is outside the path of 1 segments"},
		{"index into an empty path", conn("a", 2), "path index 2 points into an empty path"},
		{"ID of another segment", conn("x", 0, seg("nsc", "a")), `connection ID "x" is not the ID "a" of the caller's segment 0 (nsc)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := checks.NewServer()
			chain := next.NewNetworkServiceServer(updatepath.NewServer("nsmgr"), rec)

			_, err := chain.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: tt.in})
			require.Equal(t, codes.InvalidArgument, status.Code(err))
			require.ErrorContains(t, err, "updatepath: nsmgr: "+tt.msg)

			_, err = chain.Close(context.Background(), tt.in)
			require.Equal(t, codes.InvalidArgument, status.Code(err))
			require.Empty(t, rec.Requests(), "nothing bad passes on")
			require.Empty(t, rec.Closes())
		})
	}
}

// TestThreeHopsRefreshAndClose runs a request through three hops, refreshes it with what came
// back, and closes it: every hop keeps its segment and ID.
func TestThreeHopsRefreshAndClose(t *testing.T) {
	atMgr, atNSE := checks.NewServer(), checks.NewServer()
	chain := next.NewNetworkServiceServer(
		updatepath.NewServer("nsc"),
		updatepath.NewServer("nsmgr"), atMgr,
		updatepath.NewServer("nse"), atNSE,
	)
	first, err := chain.Request(context.Background(), &networkservice.NetworkServiceRequest{})
	require.NoError(t, err)
	require.Len(t, first.GetPath().GetPathSegments(), 3)
	require.Zero(t, first.GetPath().GetIndex())
	require.Equal(t, first.GetPath().GetPathSegments()[0].GetId(), first.GetId())

	again, err := chain.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: first.Clone()})
	require.NoError(t, err)
	require.Equal(t, first.GetId(), again.GetId())
	require.Len(t, again.GetPath().GetPathSegments(), 3, "a refresh adds no segment")
	for i, s := range first.GetPath().GetPathSegments() {
		require.Equal(t, s.GetId(), again.GetPath().GetPathSegments()[i].GetId(), "segment %d keeps its ID", i)
	}
	require.Equal(t, atMgr.Requests()[0].GetConnection().GetId(), atMgr.Requests()[1].GetConnection().GetId())
	require.Equal(t, atNSE.Requests()[0].GetConnection().GetId(), atNSE.Requests()[1].GetConnection().GetId())

	_, err = chain.Close(context.Background(), again)
	require.NoError(t, err)
	require.Equal(t, first.GetPath().GetPathSegments()[1].GetId(), atMgr.Closes()[0].GetId(), "each hop closes its own ID")
	require.Equal(t, first.GetPath().GetPathSegments()[2].GetId(), atNSE.Closes()[0].GetId())
	require.Equal(t, uint32(2), atNSE.Closes()[0].GetPath().GetIndex())
}

func TestClientStartsAndKeepsThePath(t *testing.T) {
	rec := checks.NewServer()
	client := next.NewNetworkServiceClient(updatepath.NewClient("nsc"), adapters.NewServerToClient(rec))

	first, err := client.Request(context.Background(), &networkservice.NetworkServiceRequest{})
	require.NoError(t, err)
	require.Len(t, first.GetPath().GetPathSegments(), 1)
	require.Equal(t, "nsc", first.GetPath().GetPathSegments()[0].GetName())

	again, err := client.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: first.Clone()})
	require.NoError(t, err)
	require.Equal(t, first.GetId(), again.GetId())
	require.Len(t, again.GetPath().GetPathSegments(), 1)
}

// cutter answers with a connection whose path lost its segments.
type cutter struct{}

func (cutter) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	c := req.GetConnection().Clone()
	c.Path = &networkservice.Path{}
	return c, nil
}

func (cutter) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func TestCutReplyIsUndone(t *testing.T) {
	rec := checks.NewServer()
	chain := next.NewNetworkServiceServer(updatepath.NewServer("nsmgr"), rec, cutter{})
	_, err := chain.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: conn("a", 0, seg("nsc", "a"))})
	require.Equal(t, codes.Internal, status.Code(err))
	require.ErrorContains(t, err, "a later element cut the path")
	require.Len(t, rec.Closes(), 1, "what next opened is closed")
	require.Empty(t, rec.Open())
}

func TestEmptyNamePanics(t *testing.T) {
	require.Panics(t, func() { updatepath.NewServer("") })
	require.Panics(t, func() { updatepath.NewClient("") })
}

func BenchmarkRefresh(b *testing.B) {
	s := updatepath.NewServer("nsmgr")
	in := conn("a", 0, seg("nsc", "a"), seg("nsmgr", "b"), seg("fwd", "c"), seg("nse", "d"))
	req := &networkservice.NetworkServiceRequest{Connection: in}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Request(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
