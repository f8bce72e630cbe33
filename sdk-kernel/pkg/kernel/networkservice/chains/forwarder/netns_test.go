package forwarder_test

import (
	"context"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edwarnicke/grpcfd"
	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	kernelmech "vwire.dev/sdk/pkg/networkservice/common/mechanisms/kernel"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/sendfd"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/sandbox"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
)

// asIs is a context in which a client chain passes its request's namespace URLs on as they are,
// as a client that sends paths (or names what it does not hold) would: sendfd takes the request
// for one it received, and opens no path.
func asIs(ctx context.Context) context.Context { return fdpass.WithFiles(ctx, fdpass.NewFiles()) }

// TestAClientNamingANamespaceItDoesNotHoldIsRefused: an inode URL whose descriptor the client
// did not send, or a path (the forwarder allows none), is refused with PermissionDenied, and
// nothing is made: the endpoint never hears of it, no namespace changes.
func TestAClientNamingANamespaceItDoesNotHoldIsRefused(t *testing.T) {
	d, nodes := mesh(t, 1, nil, nil)
	rec := checks.NewServer()
	nsc, nse, nscURL := workloads(t, d, nodes[0], payload.IP, rec)
	inode, err := fdpass.PathURL(strings.TrimPrefix(nscURL, "file://"))
	require.NoError(t, err)
	before := [3]string{nstest.Dump(t, nodes[0].ns), nstest.Dump(t, nsc), nstest.Dump(t, nse)}
	client := nodes[0].NewClient("nsc")
	for _, tt := range []struct{ name, url string }{
		{"an inode URL whose descriptor was not sent", inode},
		{"the node's namespace by path", "file:///proc/1/ns/net"},
		{"its own namespace by path", nscURL},
		{"the forwarder's namespace by path", "file:///proc/thread-self/ns/net"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(asIs(d.Context()), 30*time.Second)
			defer cancel()
			_, err := client.Request(ctx, request(tt.url))
			require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
			require.Empty(t, rec.Requests(), "the endpoint never heard of it")
			require.Equal(t, before, [3]string{nstest.Dump(t, nodes[0].ns), nstest.Dump(t, nsc), nstest.Dump(t, nse)}, "nothing is made")
		})
	}
}

// TestAnEndpointNamingAPathIsRefused: an endpoint that states its namespace by path, not passed
// (file:///proc/thread-self/ns/net would be the forwarder's own there), gets no vWire: the
// Request fails with PermissionDenied and the endpoint's connection is closed again.
func TestAnEndpointNamingAPathIsRefused(t *testing.T) {
	d, nodes := mesh(t, 1, nil, nil)
	d.RegisterService(&registry.NetworkService{Name: service, Payload: payload.IP})
	rec := checks.NewServer()
	nodes[0].NewEndpoint(&registry.NetworkServiceEndpoint{Name: "nse", NetworkServiceNames: []string{service}},
		point2pointipam.NewServer(netip.MustParsePrefix("172.16.0.0/24")),
		mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{kernel.MECHANISM: kernelmech.NewServer(kernelmech.WithNetNSURL("file:///proc/thread-self/ns/net"))}),
		rec)
	nsc, nscName := nstest.New(t)
	before := [2]string{nstest.Dump(t, nodes[0].ns), nstest.Dump(t, nsc)}
	ctx, cancel := context.WithTimeout(d.Context(), 30*time.Second)
	defer cancel()
	_, err := nodes[0].NewClient("nsc").Request(ctx, request(nstest.URL(nscName)))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), `endpoint "nse"`)
	require.Empty(t, rec.Open(), "the endpoint's connection was closed")
	require.Equal(t, before, [2]string{nstest.Dump(t, nodes[0].ns), nstest.Dump(t, nsc)}, "nothing is made")
}

// TestNamespacesAreHeldPerConnectionAndLetGo: the descriptors of a client's and an endpoint's
// namespaces are held while their connection lives, refreshes add none, and once the connection
// is closed and the hops' gRPC connections idle out, none is left.
func TestNamespacesAreHeldPerConnectionAndLetGo(t *testing.T) {
	d, nodes := mesh(t, 1, nil, nil)
	nsc, nse, nscURL := workloads(t, d, nodes[0], payload.IP)
	idle := [2]int{nstest.HandlesOn(t, nsc), nstest.HandlesOn(t, nse)}
	ctx, cancel := context.WithTimeout(d.Context(), 30*time.Second)
	defer cancel()
	client := nodes[0].NewClient("nsc")
	conn, err := client.Request(ctx, request(nscURL))
	require.NoError(t, err)
	held := [2]int{nstest.HandlesOn(t, nsc), nstest.HandlesOn(t, nse)}
	require.Greater(t, held[0], idle[0], "the client's namespace is held")
	require.Greater(t, held[1], idle[1], "the endpoint's namespace is held")
	for range 3 {
		refresh := request(nscURL)
		refresh.Connection = conn.Clone()
		conn, err = client.Request(ctx, refresh)
		require.NoError(t, err)
	}
	require.Equal(t, held, [2]int{nstest.HandlesOn(t, nsc), nstest.HandlesOn(t, nse)}, "refreshes hold nothing more")
	_, err = client.Close(ctx, conn)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return [2]int{nstest.HandlesOn(t, nsc), nstest.HandlesOn(t, nse)} == idle }, 20*time.Second, 20*time.Millisecond,
		"descriptors on the namespaces: %v idle, %v with the connection, %v after Close", idle, held, [2]int{nstest.HandlesOn(t, nsc), nstest.HandlesOn(t, nse)})
}

// TestAClientAsNSMsGetsAVWire: a client that speaks as NSM's cmd-nsc does, written here with
// NSM's API types and grpcfd only (no vwire client chain): its KERNEL mechanism names its
// namespace by inode URL and the descriptor goes beside the Request and the Close, over
// transport and per-RPC credentials of grpcfd. vwire's nsmgr and kernel forwarder give it a
// working vWire, and its Close removes it.
func TestAClientAsNSMsGetsAVWire(t *testing.T) {
	d, nodes := mesh(t, 1, nil, nil)
	nsc, nse, nscURL := workloads(t, d, nodes[0], payload.IP)
	before := [3]string{nstest.Dump(t, nodes[0].ns), nstest.Dump(t, nsc), nstest.Dump(t, nse)}
	// Its identity: an SVID of the domain's trust domain, presented in mutual TLS as NSM's
	// clients do (grpcfd around TLS), and its token signed with the SVID's key.
	id := d.NewIdentity("nsm-nsc")
	cc, err := grpc.NewClient("unix://"+nodes[0].NSMgr.URL.Path,
		grpc.WithTransportCredentials(grpcfd.TransportCredentials(credentials.NewTLS(tlsconfig.MTLSClientConfig(id.Source, id.Source, tlsconfig.AuthorizeAny())))),
		grpcfd.WithChainUnaryInterceptor())
	require.NoError(t, err)
	defer cc.Close()
	nsm := networkservice.NewNetworkServiceClient(cc)
	path := strings.TrimPrefix(nscURL, "file://")
	inode, err := grpcfd.FilenameToURL(path)
	require.NoError(t, err)
	// send is what NSM's sendfd client does for each call: the file goes with the call.
	send := func() grpc.CallOption {
		creds := grpcfd.PerRPCCredentials(nil)
		sender, _ := grpcfd.FromPerRPCCredentials(creds)
		sender.SendFilename(path)
		return grpc.PerRPCCredentials(creds)
	}
	// Addressed to the nsmgr, as NSM's per-RPC token of the call would be.
	gen, err := spiffe.Tokens(id.Source, time.Minute, token.WithAudience(spiffeid.RequireFromSegments(sandbox.TrustDomain, nodes[0].NSMgr.Name).String()))
	require.NoError(t, err)
	tok, expires, err := gen(nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(d.Context(), 30*time.Second)
	defer cancel()
	conn, err := nsm.Request(ctx, &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{
			Id:             "nsm-nsc-1",
			NetworkService: service,
			Path: &networkservice.Path{PathSegments: []*networkservice.PathSegment{
				{Name: "nsm-nsc", Id: "nsm-nsc-1", Token: tok, Expires: timestamppb.New(expires)},
			}},
		},
		MechanismPreferences: []*networkservice.Mechanism{{
			Cls: cls.LOCAL, Type: kernel.MECHANISM,
			Parameters: map[string]string{kernel.NetNSURL: inode.String(), kernel.InterfaceNameKey: "nsm-1"},
		}},
	}, send())
	require.NoError(t, err)
	require.Equal(t, inode.String(), conn.GetMechanism().GetParameters()[kernel.NetNSURL], "the answer names the client's namespace as it did")
	pingAcross(t, nsc, nse, conn)

	_, err = nsm.Close(ctx, conn, send())
	require.NoError(t, err)
	require.Equal(t, before, [3]string{nstest.Dump(t, nodes[0].ns), nstest.Dump(t, nsc), nstest.Dump(t, nse)}, "nothing is left")
}

// TestAnEndpointRegisteredBySocketIsReached: an endpoint registers with its socket passed by
// descriptor (an inode URL, as NSM's endpoints do from their pods), and its socket's path is
// removed at once: the forwarder still reaches it, through the descriptor its nsmgr received
// and passed on with the registry's answer. A registrant naming a socket it does not pass is
// refused with PermissionDenied.
func TestAnEndpointRegisteredBySocketIsReached(t *testing.T) {
	d, nodes := mesh(t, 1, nil, nil)
	d.RegisterService(&registry.NetworkService{Name: service, Payload: payload.IP})
	nse, nseName := nstest.New(t)
	nsc, nscName := nstest.New(t)
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")}
	ctx, cancel := context.WithCancel(d.Context())
	id := d.NewIdentity("nse")
	ep := endpoint.NewServer(ctx, id.Tokens, endpoint.WithName("nse"),
		endpoint.WithAdditionalFunctionality(
			point2pointipam.NewServer(netip.MustParsePrefix("172.16.0.0/24"), netip.MustParsePrefix("fd16::/120")),
			sendfd.NewServer(),
			mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{kernel.MECHANISM: kernelmech.NewServer(kernelmech.WithNetNSURL(nstest.URL(nseName)))}),
		))
	errs, err := endpoint.Serve(ctx, sock, ep, id.ServerOptions()...)
	require.NoError(t, err)
	cc, err := regclient.Dial(nodes[0].NSMgr.URL, id.RegistryDialOptions()...)
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for range errs {
		}
		_ = cc.Close()
	})

	inode, err := fdpass.PathURL(sock.Path)
	require.NoError(t, err)
	_, _, err = regclient.Register(ctx, cc, &registry.NetworkServiceEndpoint{Name: "thief", NetworkServiceNames: []string{service}, Url: inode})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "a socket named but not passed: %v", err)

	got, unregister, err := regclient.Register(ctx, cc, &registry.NetworkServiceEndpoint{Name: "nse", NetworkServiceNames: []string{service}, Url: sock.String()},
		regclient.WithSocketPassed())
	require.NoError(t, err)
	require.Equal(t, sock.String(), got.GetUrl(), "the endpoint gets its own URL back")
	require.NoError(t, os.Remove(sock.Path), "from now on only the descriptor reaches the endpoint")

	requesting, done := context.WithTimeout(ctx, 30*time.Second)
	defer done()
	client := nodes[0].NewClient("nsc")
	conn, err := client.Request(requesting, request(nstest.URL(nscName)))
	require.NoError(t, err)
	require.Equal(t, "nse", conn.GetNetworkServiceEndpointName())
	pingAcross(t, nsc, nse, conn)
	_, err = client.Close(requesting, conn)
	require.NoError(t, err)
	require.NoError(t, unregister(requesting))
}
