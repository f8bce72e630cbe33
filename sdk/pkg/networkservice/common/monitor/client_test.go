package monitor_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/connect"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/common/updatepath"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// listener registers a monitor listener for each connection and queues its events.
type listener struct{ events chan monitor.Event }

func (l *listener) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	monitor.Listen(ctx, func(e monitor.Event) {
		select {
		case l.events <- e:
		default:
			panic("test listener queue full")
		}
	})
	return next.Server(ctx).Request(ctx, req)
}

func (l *listener) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func (l *listener) next(t *testing.T) monitor.Event {
	t.Helper()
	select {
	case e := <-l.events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no monitor event for the listener")
		return monitor.Event{}
	}
}

// path builds a mesh: the test plays a client at the head of the path, mgr passes its
// connections to nse, and both serve MonitorConnections.
type path struct {
	nse     *sinkTaker
	nseMon  *counted
	stopNSE func()
	mgr     networkservice.NetworkServiceClient
	mgrMon  networkservice.MonitorConnectionClient
	heard   *listener // mgr's client side listener
}

func newPath(t *testing.T, ctx context.Context) *path {
	p := &path{nse: &sinkTaker{}, heard: &listener{events: make(chan monitor.Event, 16)}}
	nseMon := monitor.NewServer(ctx)
	p.nseMon = &counted{MonitorConnectionServer: nseMon}
	nseURL, stop := start(t, next.NewNetworkServiceServer(
		updatepath.NewServer("nse"), begin.NewServer(), metadata.NewServer(), nseMon, p.nse), p.nseMon)
	p.stopNSE = stop

	mgrMon := monitor.NewServer(ctx)
	toNSE := next.NewNetworkServiceClient(
		metadata.NewClient(),
		adapters.NewServerToClient(p.heard),
		clienturl.NewClient(nseURL),
		dial.NewClient(ctx),
		monitor.NewClient(ctx),
		connect.NewClient(),
	)
	mgrURL, _ := start(t, next.NewNetworkServiceServer(
		updatepath.NewServer("mgr"), begin.NewServer(), metadata.NewServer(), mgrMon, connect.NewServer(toNSE)), mgrMon)
	p.mgr, p.mgrMon = clients(t, mgrURL)
	return p
}

func clientRequest() *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{
		Id:             "nsc-1",
		NetworkService: "ns",
		Path:           &networkservice.Path{PathSegments: []*networkservice.PathSegment{{Name: "nsc", Id: "nsc-1"}}},
	}}
}

func names(c *networkservice.Connection) []string {
	var out []string
	for _, seg := range c.GetPath().GetPathSegments() {
		out = append(out, seg.GetName())
	}
	return out
}

func TestEventsPassUpThePath(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := newPath(t, ctx)

	conn, err := p.mgr.Request(ctx, clientRequest())
	require.NoError(t, err)
	require.Equal(t, []string{"nsc", "mgr", "nse"}, names(conn))

	// The client's own subscription at mgr, by its segment.
	stream := subscribe(t, ctx, p.mgrMon, &networkservice.MonitorScopeSelector{
		PathSegments: []*networkservice.PathSegment{{Name: "nsc", Id: "nsc-1"}},
	})
	kind, conns := recv(t, stream)
	require.Equal(t, networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, kind)
	mgrID := conn.GetPath().GetPathSegments()[1].GetId()
	require.Contains(t, conns, mgrID)

	// The endpoint reports the connection down: mgr tells its listener and its subscribers.
	atNSE := p.nse.get()
	down := conn.Clone()
	down.State = networkservice.State_DOWN
	atNSE(down)

	e := p.heard.next(t)
	require.NoError(t, e.Err)
	require.Equal(t, networkservice.State_DOWN, e.Conn.GetState())
	require.Equal(t, mgrID, e.Conn.GetId(), "the listener gets the connection as mgr's client side sees it")
	require.Equal(t, uint32(1), e.Conn.GetPath().GetIndex())

	kind, conns = recv(t, stream)
	require.Equal(t, networkservice.ConnectionEventType_UPDATE, kind)
	require.Equal(t, networkservice.State_DOWN, conns[mgrID].GetState())
	require.Equal(t, []string{"nsc", "mgr", "nse"}, names(conns[mgrID]))

	// Back up, then the endpoint dies: the lost stream is reported DOWN.
	atNSE(conn.Clone())
	require.Equal(t, networkservice.State_UP, p.heard.next(t).Conn.GetState())
	_, conns = recv(t, stream)
	require.Equal(t, networkservice.State_UP, conns[mgrID].GetState())

	p.stopNSE()
	_, conns = recv(t, stream)
	require.Equal(t, networkservice.State_DOWN, conns[mgrID].GetState())
	e = p.heard.next(t)
	require.Error(t, e.Err)
	require.Nil(t, e.Conn)
	require.Equal(t, codes.Unavailable, status.Code(e.Err), "%v", e.Err)
}

func TestRefreshKeepsTheStreamAndCloseEndsIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := newPath(t, ctx)

	conn, err := p.mgr.Request(ctx, clientRequest())
	require.NoError(t, err)
	// A refresh: the stream stays, and follows the connection as the refresh returned it.
	refresh := clientRequest()
	refresh.Connection = conn.Clone()
	refresh.Connection.Labels = map[string]string{"refreshed": "yes"}
	_, err = p.mgr.Request(ctx, refresh)
	require.NoError(t, err)

	down := conn.Clone()
	down.State = networkservice.State_DOWN
	p.nse.get()(down)
	e := p.heard.next(t)
	require.Equal(t, networkservice.State_DOWN, e.Conn.GetState())
	require.Equal(t, "yes", e.Conn.GetLabels()["refreshed"])
	require.Equal(t, int32(1), p.nseMon.total.Load(), "a refresh to the same hop opens no second stream")

	// Close ends the stream and waits for its reader: the endpoint's DELETE is not reported,
	// nor is the endpoint's end.
	_, err = p.mgr.Close(ctx, conn)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.nseMon.active.Load() == 0 }, 10*time.Second, time.Millisecond)
	p.stopNSE()
	select {
	case e := <-p.heard.events:
		t.Fatalf("an event after Close: %v", e)
	default:
	}
}

func TestNoNextHopMonitor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// An endpoint without MonitorConnection: the stream ends Unimplemented, nothing goes up.
	nseURL, _ := start(t, next.NewNetworkServiceServer(updatepath.NewServer("nse")), nil)
	heard := &listener{events: make(chan monitor.Event, 4)}
	mgrMon := monitor.NewServer(ctx)
	c := next.NewNetworkServiceServer(updatepath.NewServer("mgr"), begin.NewServer(), metadata.NewServer(), mgrMon,
		connect.NewServer(next.NewNetworkServiceClient(
			metadata.NewClient(), adapters.NewServerToClient(heard), clienturl.NewClient(nseURL), dial.NewClient(ctx), monitor.NewClient(ctx), connect.NewClient())))
	conn, err := c.Request(ctx, clientRequest())
	require.NoError(t, err)
	e := heard.next(t)
	require.Equal(t, codes.Unimplemented, status.Code(e.Err))
	_, err = c.Close(ctx, conn)
	require.NoError(t, err)
}

// counted counts the MonitorConnections streams a server was asked for.
type counted struct {
	networkservice.MonitorConnectionServer
	total, active atomic.Int32
}

func (c *counted) MonitorConnections(sel *networkservice.MonitorScopeSelector, srv networkservice.MonitorConnection_MonitorConnectionsServer) error {
	c.total.Add(1)
	c.active.Add(1)
	defer c.active.Add(-1)
	return c.MonitorConnectionServer.MonitorConnections(sel, srv)
}
