package mechanismtranslation_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vxlan"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/conformance"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"

	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/mechanismtranslation"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	clientMech = &networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM, Parameters: map[string]string{kernel.InterfaceNameKey: "nsm-1"}}
	tunnelMech = &networkservice.Mechanism{Cls: cls.REMOTE, Type: vxlan.MECHANISM, Parameters: map[string]string{vxlan.VNI: "42"}}
)

func chain(fail *inject.Errors, rec *checks.Recorder) networkservice.NetworkServiceClient {
	choose := adapters.NewServerToClient(chooser{})
	return next.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), mechanismtranslation.NewClient(),
		adapters.NewServerToClient(offer{}), adapters.NewServerToClient(fail), adapters.NewServerToClient(rec), choose)
}

// offer stands for the mechanism elements: it offers VXLAN.
type offer struct{}

func (offer) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	req.MechanismPreferences = append(req.MechanismPreferences, proto.CloneOf(tunnelMech))
	return next.Server(ctx).Request(ctx, req)
}

func (offer) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// chooser stands for the next hop: it keeps the connection's mechanism or takes the first offer.
type chooser struct{}

func (chooser) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn := req.GetConnection().Clone()
	if conn.GetMechanism() == nil {
		conn.Mechanism = req.GetMechanismPreferences()[0].Clone()
	}
	return conn, nil
}

func (chooser) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func request() *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{Id: "c-1", NetworkService: "ns", Mechanism: proto.CloneOf(clientMech)},
		MechanismPreferences: []*networkservice.Mechanism{proto.CloneOf(clientMech)},
	}
}

func TestTranslation(t *testing.T) {
	rec := checks.NewServer()
	fail := inject.NewServer(nil)
	c := chain(fail, rec)
	ctx := context.Background()

	conn, err := c.Request(ctx, request())
	require.NoError(t, err)
	require.True(t, proto.Equal(clientMech, conn.GetMechanism()), "the caller gets its own mechanism back")
	first := rec.Requests()[0]
	require.Nil(t, first.GetConnection().GetMechanism(), "the next hop chooses on a first Request")
	require.Len(t, first.GetMechanismPreferences(), 1, "the previous hop's preferences are gone")
	require.Equal(t, vxlan.MECHANISM, first.GetMechanismPreferences()[0].GetType())

	refresh := request()
	refresh.Connection = conn
	conn, err = c.Request(ctx, refresh)
	require.NoError(t, err)
	require.True(t, proto.Equal(clientMech, conn.GetMechanism()))
	require.True(t, proto.Equal(tunnelMech, rec.Requests()[1].GetConnection().GetMechanism()), "a refresh keeps the next hop's mechanism")

	_, err = c.Close(ctx, conn)
	require.NoError(t, err)
	require.True(t, proto.Equal(tunnelMech, rec.Closes()[0].GetMechanism()), "Close sends the next hop's mechanism")
	require.True(t, proto.Equal(clientMech, conn.GetMechanism()), "the caller's connection is not changed")

	// A new first Request after a failed one chooses again.
	fail.FailRequests(status.Error(codes.Unavailable, "down"))
	_, err = c.Request(ctx, request())
	require.Error(t, err)
	fail.FailRequests(nil)
	_, err = c.Request(ctx, request())
	require.NoError(t, err)
	require.Nil(t, rec.Requests()[2].GetConnection().GetMechanism())
}

func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.Case{
		Name:    "mechanismtranslation",
		Client:  func(context.Context) networkservice.NetworkServiceClient { return mechanismtranslation.NewClient() },
		Request: request,
	})
}
