package kernel_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/common"
	kernelmech "github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vxlan"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/api/validate"
	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/kernel"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/recvfd"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/sendfd"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// probe records, at the endpoint, the file that came for the connection's namespace.
type probe struct {
	mu   sync.Mutex
	mech *networkservice.Mechanism
	file string // the inode URL of the file the elements after recvfd hold
}

func (p *probe) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	p.mu.Lock()
	p.mech = req.GetConnection().GetMechanism()
	if p.mech == nil { // no mechanisms element: the first offer stands
		p.mech = req.GetMechanismPreferences()[0]
	}
	p.mech = p.mech.Clone()
	if f := fdpass.FromContext(ctx).Get(p.mech.GetParameters()[common.InodeURL]); f != nil {
		p.file, _ = fdpass.URLOf(f)
	}
	p.mu.Unlock()
	return next.Server(ctx).Request(ctx, req)
}

func (p *probe) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// serve serves an endpoint of extra on a unix socket over real gRPC until the test ends.
func serve(t *testing.T, extra ...networkservice.NetworkServiceServer) (context.Context, *url.URL) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	u := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")}
	ep := endpoint.NewServer(ctx, token.NewInsecure(time.Minute, token.WithName("nse")), endpoint.WithName("nse"),
		endpoint.WithAdditionalFunctionality(extra...))
	errs, err := endpoint.Serve(ctx, u, ep)
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for err := range errs {
			t.Error(err)
		}
	})
	return ctx, u
}

func ownNetNSInode(t *testing.T) string {
	u, err := fdpass.PathURL("/proc/self/ns/net")
	require.NoError(t, err)
	return u
}

// TestTheClientOffersItsNamespace: a request without preferences, through vwire's client chain
// with the element (and NSM's habit of adding sendfd too) over real gRPC, reaches the endpoint
// offering KERNEL with a derived interface name and this process's namespace as a descriptor.
func TestTheClientOffersItsNamespace(t *testing.T) {
	p := &probe{}
	ctx, u := serve(t, recvfd.NewServer(), p)
	nsc := client.NewClient(ctx, client.WithClientURL(u), client.WithoutHeal(), client.WithoutRetry(),
		client.WithAdditionalFunctionality(kernel.NewClient(), sendfd.NewClient()))
	req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "conn-1", NetworkService: "icmp.responder"}}
	conn, err := nsc.Request(ctx, req)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = nsc.Close(context.WithoutCancel(ctx), conn) })

	mech := kernelmech.ToMechanism(p.mech)
	require.NotNil(t, mech, "the endpoint got a KERNEL mechanism")
	require.Equal(t, kernel.DerivedName("icmp.responder", "conn-1"), mech.GetInterfaceName())
	require.Regexp(t, "^icmpre-[0-9a-f]{8}$", mech.GetInterfaceName())
	require.NoError(t, validate.InterfaceName(mech.GetInterfaceName()))
	require.Equal(t, ownNetNSInode(t), mech.GetNetNSURL(), "named by inode on the wire")
	require.Equal(t, ownNetNSInode(t), p.file, "the very namespace came as a descriptor")
}

// TestTheEndpointStatesItsNamespace: the endpoint's KERNEL sub-chain states its namespace and
// the interface name it was given; sendfd's server sends the namespace with the answer, which
// the client's recvfd requires (PermissionDenied otherwise).
func TestTheEndpointStatesItsNamespace(t *testing.T) {
	ctx, u := serve(t, mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{
		kernelmech.MECHANISM: kernel.NewServer(kernel.WithInterfaceName("nse-eth0")),
	}), sendfd.NewServer())
	nsc := client.NewClient(ctx, client.WithClientURL(u), client.WithoutHeal(), client.WithoutRetry(),
		client.WithAdditionalFunctionality(recvfd.NewClient()))
	offer := kernelmech.ToMechanism(kernelmech.New(""))
	offer.SetInterfaceName("fwd-offered")
	conn, err := nsc.Request(ctx, &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{NetworkService: "svc"},
		MechanismPreferences: []*networkservice.Mechanism{offer.Mechanism},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = nsc.Close(context.WithoutCancel(ctx), conn) })
	got := kernelmech.ToMechanism(conn.GetMechanism())
	require.Equal(t, ownNetNSInode(t), got.GetNetNSURL())
	require.Equal(t, "nse-eth0", got.GetInterfaceName())
}

// TestTheCallersChoicesStand: a preference's own namespace and name are kept, other mechanisms
// are left alone, and no KERNEL preference is added beside an existing one.
func TestTheCallersChoicesStand(t *testing.T) {
	mine := kernelmech.ToMechanism(kernelmech.New("file:///var/run/netns/other"))
	mine.SetInterfaceName("mine0")
	other := &networkservice.Mechanism{Type: vxlan.MECHANISM, Parameters: map[string]string{}}
	req := &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{Id: "c", NetworkService: "s"},
		MechanismPreferences: []*networkservice.Mechanism{other, mine.Mechanism},
	}
	_, err := kernel.NewClient(kernel.WithInterfaceName("given0")).Request(context.Background(), req)
	require.NoError(t, err)
	require.Len(t, req.GetMechanismPreferences(), 2)
	require.Equal(t, "file:///var/run/netns/other", mine.GetNetNSURL())
	require.Equal(t, "mine0", mine.GetInterfaceName())
	require.Empty(t, other.GetParameters())

	blank := kernelmech.ToMechanism(kernelmech.New(""))
	req.MechanismPreferences = []*networkservice.Mechanism{blank.Mechanism}
	_, err = kernel.NewClient(kernel.WithInterfaceName("given0")).Request(context.Background(), req)
	require.NoError(t, err)
	require.Equal(t, "given0", blank.GetInterfaceName())
	require.Equal(t, kernel.NetNSURL(), blank.GetNetNSURL())
}

func TestBadOptionsPanic(t *testing.T) {
	require.PanicsWithValue(t, "kernel.WithInterfaceName: interface name \"much-too-long-name\" is 18 bytes, limit 15",
		func() { kernel.WithInterfaceName("much-too-long-name") })
	require.PanicsWithValue(t, "kernel.WithNetNSURL: \"inode://4/5\" is not a file:///path URL",
		func() { kernel.WithNetNSURL("inode://4/5") })
}

func TestDerivedNames(t *testing.T) {
	for service, prefix := range map[string]string{"icmp-responder": "icmp-r", "a/b.c": "abc", "": "nsm", "../..": "nsm"} {
		name := kernel.DerivedName(service, "id")
		require.NoError(t, validate.InterfaceName(name))
		require.Equal(t, prefix+"-", name[:len(prefix)+1])
		require.Equal(t, name, kernel.DerivedName(service, "id"), "the same for the same connection")
		require.NotEqual(t, name, kernel.DerivedName(service, "id2"))
	}
}
