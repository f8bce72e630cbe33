package mechanisms_test

import (
	"context"
	"errors"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/memif"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vfio"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vxlan"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// trail records which sub-chain ran, in order.
type trail struct{ ran []string }

// sub is a per-mechanism sub-chain for tests: it records its name, and changes the mechanism's
// parameters, as a real one (naming an interface) would.
type sub struct {
	name string
	t    *trail
}

func (s sub) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	s.t.ran = append(s.t.ran, "request "+s.name)
	if m := req.GetConnection().GetMechanism(); m != nil {
		if m.Parameters == nil {
			m.Parameters = map[string]string{}
		}
		m.Parameters["by"] = s.name
	}
	return next.Server(ctx).Request(ctx, req)
}

func (s sub) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	s.t.ran = append(s.t.ran, "close "+s.name)
	return next.Server(ctx).Close(ctx, conn)
}

func mech(c, t string) *networkservice.Mechanism {
	return &networkservice.Mechanism{Cls: c, Type: t, Parameters: map[string]string{"offer": t}}
}

var (
	kernelMech = func() *networkservice.Mechanism { return mech(cls.LOCAL, kernel.MECHANISM) }
	memifMech  = func() *networkservice.Mechanism { return mech(cls.LOCAL, memif.MECHANISM) }
	vfioMech   = func() *networkservice.Mechanism { return mech(cls.LOCAL, vfio.MECHANISM) }
	vxlanMech  = func() *networkservice.Mechanism { return mech(cls.REMOTE, vxlan.MECHANISM) }
)

func request(current *networkservice.Mechanism, prefs ...*networkservice.Mechanism) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{Id: "c1", Mechanism: current},
		MechanismPreferences: prefs,
	}
}

// kernelAndVXLAN returns a server chain [mechanisms{KERNEL, VXLAN}, rest].
func kernelAndVXLAN() (*trail, *checks.Recorder, networkservice.NetworkServiceServer) {
	tr := &trail{}
	rest := checks.NewServer()
	srv := chain.NewNetworkServiceServer(
		mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{
			kernel.MECHANISM: sub{name: kernel.MECHANISM, t: tr},
			vxlan.MECHANISM:  sub{name: vxlan.MECHANISM, t: tr},
		}),
		rest,
	)
	return tr, rest, srv
}

func TestServerRequest(t *testing.T) {
	tests := []struct {
		name     string
		req      *networkservice.NetworkServiceRequest
		wantRan  []string
		wantType string // the mechanism the rest of the chain sees
		wantErr  string
	}{
		{
			name:     "first supported preference wins",
			req:      request(nil, memifMech(), vxlanMech(), kernelMech()),
			wantRan:  []string{"request VXLAN"},
			wantType: vxlan.MECHANISM,
		},
		{
			name:     "preference order, not map order",
			req:      request(nil, kernelMech(), vxlanMech()),
			wantRan:  []string{"request KERNEL"},
			wantType: kernel.MECHANISM,
		},
		{
			name:     "refresh keeps the connection's mechanism",
			req:      request(vxlanMech(), kernelMech(), vxlanMech()),
			wantRan:  []string{"request VXLAN"},
			wantType: vxlan.MECHANISM,
		},
		{
			name:     "refresh without preferences",
			req:      request(kernelMech()),
			wantRan:  []string{"request KERNEL"},
			wantType: kernel.MECHANISM,
		},
		{
			name:    "nothing supported",
			req:     request(nil, memifMech(), vfioMech()),
			wantErr: "mechanisms: none of the offered mechanisms [MEMIF VFIO] is supported; this endpoint supports KERNEL, VXLAN",
		},
		{
			name:    "nothing offered",
			req:     request(nil),
			wantErr: "mechanisms: the request offers no mechanism; add a mechanism preference (this endpoint supports KERNEL, VXLAN)",
		},
		{
			name:    "refresh with an unsupported mechanism",
			req:     request(memifMech(), kernelMech()),
			wantErr: "mechanisms: the connection's mechanism MEMIF is not supported; this endpoint supports KERNEL, VXLAN",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, rest, srv := kernelAndVXLAN()
			offered := tt.req.Clone().GetMechanismPreferences()

			conn, err := srv.Request(context.Background(), tt.req)
			if tt.wantErr != "" {
				require.Equal(t, codes.InvalidArgument, status.Code(err))
				require.Equal(t, tt.wantErr, status.Convert(err).Message())
				require.Empty(t, tr.ran, "nothing runs")
				require.Empty(t, rest.Requests())
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantRan, tr.ran)
			require.Len(t, rest.Requests(), 1, "the sub-chain continues into the rest of the chain")
			seen := rest.Requests()[0].GetConnection().GetMechanism()
			require.Equal(t, tt.wantType, seen.GetType())
			require.Equal(t, tt.wantType, seen.GetParameters()["by"])
			require.Equal(t, tt.wantType, conn.GetMechanism().GetType())
			require.Len(t, tt.req.GetMechanismPreferences(), len(offered))
			for i, m := range offered {
				require.True(t, proto.Equal(m, tt.req.GetMechanismPreferences()[i]), "the preferences are not changed")
			}
		})
	}
}

func TestServerClose(t *testing.T) {
	tests := []struct {
		name    string
		mech    *networkservice.Mechanism
		wantRan []string
	}{
		{name: "supported", mech: vxlanMech(), wantRan: []string{"close VXLAN"}},
		{name: "unknown type passes on", mech: memifMech()},
		{name: "no mechanism passes on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, rest, srv := kernelAndVXLAN()
			_, err := srv.Close(context.Background(), &networkservice.Connection{Id: "c1", Mechanism: tt.mech})
			require.NoError(t, err)
			require.Equal(t, tt.wantRan, tr.ran)
			require.Len(t, rest.Closes(), 1, "cleanup reaches the rest of the chain")
		})
	}
}

func TestServerSubChainError(t *testing.T) {
	tr := &trail{}
	boom := status.Error(codes.Unavailable, "vxlan: no route to 10.0.0.2")
	srv := chain.NewNetworkServiceServer(
		mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{
			vxlan.MECHANISM:  chain.NewNetworkServiceServer(sub{name: vxlan.MECHANISM, t: tr}, inject.NewServer(boom)),
			kernel.MECHANISM: sub{name: kernel.MECHANISM, t: tr},
		}),
	)
	_, err := srv.Request(context.Background(), request(nil, vxlanMech(), kernelMech()))
	require.Equal(t, boom, err, "the error is returned as it is")
	require.Equal(t, []string{"request VXLAN"}, tr.ran, "no other preference is tried")
}

func TestClient(t *testing.T) {
	tests := []struct {
		name     string
		req      *networkservice.NetworkServiceRequest
		wantRan  []string
		wantMech string // the connection's mechanism type the rest of the chain sees; "" none
		wantErr  string
	}{
		{
			name:    "first supported preference, mechanism left to the server",
			req:     request(nil, vfioMech(), kernelMech(), memifMech()),
			wantRan: []string{"request KERNEL"},
		},
		{
			name:     "refresh follows the server's choice",
			req:      request(memifMech(), kernelMech(), memifMech()),
			wantRan:  []string{"request MEMIF"},
			wantMech: memif.MECHANISM,
		},
		{
			name:    "nothing supported",
			req:     request(nil, vxlanMech()),
			wantErr: "mechanisms: none of the offered mechanisms [VXLAN] is supported; this client supports KERNEL, MEMIF",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &trail{}
			rest := checks.NewServer()
			c := chain.NewNetworkServiceClient(
				mechanisms.NewClient(map[string]networkservice.NetworkServiceClient{
					kernel.MECHANISM: adapters.NewServerToClient(sub{name: kernel.MECHANISM, t: tr}),
					memif.MECHANISM:  adapters.NewServerToClient(sub{name: memif.MECHANISM, t: tr}),
				}),
				adapters.NewServerToClient(rest),
			)
			conn, err := c.Request(context.Background(), tt.req)
			if tt.wantErr != "" {
				require.Equal(t, codes.InvalidArgument, status.Code(err))
				require.Equal(t, tt.wantErr, status.Convert(err).Message())
				require.Empty(t, tr.ran)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantRan, tr.ran)
			require.Len(t, rest.Requests(), 1)
			require.Equal(t, tt.wantMech, rest.Requests()[0].GetConnection().GetMechanism().GetType())

			// Close follows the connection's mechanism, or passes on without one.
			tr.ran = nil
			_, err = c.Close(context.Background(), conn)
			require.NoError(t, err)
			if tt.wantMech != "" {
				require.Equal(t, []string{"close " + tt.wantMech}, tr.ran)
			} else {
				require.Empty(t, tr.ran)
			}
			require.Len(t, rest.Closes(), 1)
		})
	}
}

func TestConstructorPanics(t *testing.T) {
	require.PanicsWithValue(t, "mechanisms: NewServer needs at least one mechanism", func() {
		mechanisms.NewServer(nil)
	})
	require.PanicsWithValue(t, `mechanisms: NewClient got a nil element for "KERNEL"`, func() {
		mechanisms.NewClient(map[string]networkservice.NetworkServiceClient{kernel.MECHANISM: nil})
	})
}

func TestErrorsAreStatuses(t *testing.T) {
	srv := mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{kernel.MECHANISM: checks.NewServer()})
	_, err := srv.Request(context.Background(), request(nil, vxlanMech()))
	var st interface{ GRPCStatus() *status.Status }
	require.True(t, errors.As(err, &st))
}
