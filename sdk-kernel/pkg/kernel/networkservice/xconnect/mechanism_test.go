package xconnect_test

import (
	"context"
	"errors"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"

	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/xconnect"
)

// thing is what the test's mechanism element makes.
type thing struct{ end *xconnect.End }

func (t *thing) End() *xconnect.End { return t.end }

var (
	serverThing = metadata.NewKey[*thing]("test server thing")
	clientThing = metadata.NewKey[*thing]("test client thing")
)

// maker makes a thing (or fails with makeErr) and counts what it removes (failing with removeErr).
type maker struct {
	makeErr, removeErr error
	made, removed      int
}

func (k *maker) ensure(old *thing) (*thing, error) {
	if k.makeErr != nil {
		return old, k.makeErr
	}
	if old != nil {
		return old, nil
	}
	k.made++
	return &thing{end: &xconnect.End{Name: "thing"}}, nil
}

func (k *maker) remove(*thing) error {
	k.removed++
	return k.removeErr
}

// thingServer and thingClient are mechanism elements written with the helpers, as the real ones are.
type thingServer struct{ *maker }

func (s thingServer) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	old, refresh := serverThing.Load(metadata.Server(ctx))
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, err
	}
	now, err := s.ensure(old)
	return xconnect.KeepServer(ctx, conn, serverThing, refresh, now, err)
}

func (s thingServer) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return xconnect.CloseServer(ctx, conn, serverThing, s.remove)
}

type thingClient struct{ *maker }

func (c thingClient) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	old, refresh := clientThing.Load(metadata.Client(ctx))
	conn, err := next.Client(ctx).Request(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	now, err := c.ensure(old)
	return xconnect.KeepClient(ctx, conn, clientThing, refresh, now, err, opts...)
}

func (c thingClient) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return xconnect.CloseClient(ctx, conn, clientThing, c.remove, opts...)
}

// TestMechanismHelpers: what a mechanism element built on the helpers does when making or
// removing its end fails, on either side of a forwarder.
func TestMechanismHelpers(t *testing.T) {
	errMake, errRemove, errNext := errors.New("make failed"), errors.New("remove failed"), errors.New("next failed")
	tests := []struct {
		name                              string
		firstErr, refreshErr              error // from making the end on the first Request and a refresh
		refresh                           bool
		removeErr, nextCloseErr           error
		wantUndone, wantMade, wantRemoved int // Closes reaching next before the caller's Close; ends made; removes on Close
		wantCloseErr                      []error
	}{
		{name: "request and close", wantMade: 1, wantRemoved: 1},
		{name: "refresh keeps the end", refresh: true, wantMade: 1, wantRemoved: 1},
		{name: "a failed first Request is undone and keeps nothing", firstErr: errMake, wantUndone: 1},
		{name: "a failed refresh keeps the connection and its end", refresh: true, refreshErr: errMake, wantMade: 1, wantRemoved: 1},
		{name: "close calls next when removing fails", removeErr: errRemove, wantMade: 1, wantRemoved: 1, wantCloseErr: []error{errRemove}},
		{name: "close removes when next fails", nextCloseErr: errNext, wantMade: 1, wantRemoved: 1, wantCloseErr: []error{errNext}},
		{name: "close returns both errors", removeErr: errRemove, nextCloseErr: errNext, wantMade: 1, wantRemoved: 1, wantCloseErr: []error{errRemove, errNext}},
	}
	sides := map[string]func(*maker, *inject.Errors, *checks.Recorder) networkservice.NetworkServiceServer{
		"server": func(k *maker, inj *inject.Errors, rec *checks.Recorder) networkservice.NetworkServiceServer {
			return next.NewNetworkServiceServer(metadata.NewServer(), thingServer{k}, inj, rec)
		},
		"client": func(k *maker, inj *inject.Errors, rec *checks.Recorder) networkservice.NetworkServiceServer {
			return adapters.NewClientToServer(next.NewNetworkServiceClient(metadata.NewClient(), thingClient{k},
				adapters.NewServerToClient(inj), adapters.NewServerToClient(rec)))
		},
	}
	for side, chain := range sides {
		for _, tt := range tests {
			t.Run(side+"/"+tt.name, func(t *testing.T) {
				ctx := context.Background()
				k, inj, rec := &maker{makeErr: tt.firstErr}, inject.NewServer(nil), checks.NewServer()
				elem := chain(k, inj, rec)
				req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "conn-1"}}
				conn, err := elem.Request(ctx, req)
				require.ErrorIs(t, err, tt.firstErr)
				if tt.refresh {
					k.makeErr = tt.refreshErr
					_, err = elem.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn})
					require.ErrorIs(t, err, tt.refreshErr)
				}
				require.Len(t, rec.Closes(), tt.wantUndone, "closes that undid a Request")
				require.Equal(t, tt.wantMade, k.made, "ends made")

				k.removeErr = tt.removeErr
				inj.FailCloses(tt.nextCloseErr)
				_, err = elem.Close(ctx, req.GetConnection())
				if len(tt.wantCloseErr) == 0 {
					require.NoError(t, err)
				}
				for _, want := range tt.wantCloseErr {
					require.ErrorIs(t, err, want)
				}
				require.Len(t, rec.Closes(), tt.wantUndone+1, "Close reached next")
				require.Equal(t, tt.wantRemoved, k.removed, "ends removed")

				inj.FailCloses(nil)
				_, err = elem.Close(ctx, req.GetConnection())
				require.NoError(t, err)
				require.Equal(t, tt.wantRemoved, k.removed, "a second Close removes nothing more")
			})
		}
	}
}
