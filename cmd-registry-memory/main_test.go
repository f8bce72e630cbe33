package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
)

var bin string // the command, built once

func TestMain(m *testing.M) {
	cmdtest.Main(m, map[string]*string{".": &bin})
}

func TestHelpAndREADMEListEveryVariable(t *testing.T) {
	cmdtest.CheckDocs(t, bin, &config{})
}

func TestBadConfigurationStopsWithOneLine(t *testing.T) {
	dir := cmdtest.TempDir(t)
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	busy := filepath.Join(dir, "busy.sock")
	startRegistry(t, "unix://"+busy)

	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"listen URL without scheme", []string{"NSM_LISTEN_ON=unix//x"}, nil,
			`NSM_LISTEN_ON: "unix//x": has no scheme; use unix:///path/to/socket or tcp://host:port`},
		{"listen URL with a path", []string{"NSM_LISTEN_ON=tcp://:5002/registry"}, nil,
			`NSM_LISTEN_ON: "tcp://:5002/registry": has path "/registry"; a tcp URL is only tcp://host:port`},
		{"a listen URL twice", []string{"NSM_LISTEN_ON=tcp://:5002,tcp://:5002"}, nil,
			`NSM_LISTEN_ON: "tcp://:5002,tcp://:5002": item 2 "tcp://:5002": given twice`},
		{"expire period without unit", []string{"NSM_EXPIRE_PERIOD=60"}, nil,
			`NSM_EXPIRE_PERIOD: "60": not a duration; write a number with a unit: 500ms, 30s, 5m, 1h30m`},
		{"zero expire period", []string{"NSM_EXPIRE_PERIOD=0s"}, nil,
			`NSM_EXPIRE_PERIOD: "0s": must be positive`},
		{"unknown log level", []string{"NSM_LOG_LEVEL=LOUD"}, nil,
			`NSM_LOG_LEVEL: "LOUD": want one of TRACE, DEBUG, INFO, WARN, ERROR`},
		{"an argument", nil, []string{"serve"},
			`unexpected argument "serve"; the command takes NSM_* environment variables only (see --help)`},
		{"socket path is a file", []string{"NSM_LISTEN_ON=unix://" + file}, nil,
			fmt.Sprintf("hopurl: listen on unix://%s: %s exists and is not a socket; remove it or pick another path", file, file)},
		{"socket in use", []string{"NSM_LISTEN_ON=unix://" + busy}, nil,
			fmt.Sprintf("hopurl: listen on unix://%s: another process is serving on this socket", busy)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// ERROR: nothing but the error line, also when the error comes after start.
			line, _ := cmdtest.Fails(t, bin, append([]string{"NSM_LOG_LEVEL=ERROR"}, tc.env...), tc.args...)
			require.Equal(t, "cmd-registry-memory: "+tc.want, line)
		})
	}
}

// served is a started cmd-registry-memory and a connection to it.
type served struct {
	*cmdtest.Process
	cc   *grpc.ClientConn
	sock string
}

// startRegistry starts the command on listen (a unix URL first, maybe others after a comma) and
// waits until it serves on the first.
func startRegistry(t *testing.T, listen string, env ...string) *served {
	p := cmdtest.Start(t, bin, append([]string{"NSM_LOG_LEVEL=DEBUG", "NSM_LISTEN_ON=" + listen}, env...))
	first, _, _ := strings.Cut(listen, ",")
	cc := cmdtest.Dial(t, first)
	cmdtest.WaitServing(t, cc)
	return &served{Process: p, cc: cc, sock: strings.TrimPrefix(first, "unix://")}
}

// TestNSMsVariables: the registry runs with the environment of NSM's own registry manifest
// (deployments-k8s apps/registry-memory: a tcp address, a proxy registry named host:port), and
// a unix socket besides, and serves on both.
func TestNSMsVariables(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0") // a free port, given back for the registry
	require.NoError(t, err)
	tcp := "tcp://" + lis.Addr().String()
	require.NoError(t, lis.Close())
	unix := "unix://" + filepath.Join(cmdtest.TempDir(t), "registry.sock")

	r := startRegistry(t, unix+","+tcp,
		"NSM_LOG_LEVEL=TRACE",
		"NSM_PROXY_REGISTRY_URL=nsmgr-proxy:5004",
	)
	cmdtest.WaitServing(t, cmdtest.Dial(t, tcp))
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	_, err = registry.NewNetworkServiceEndpointRegistryClient(cmdtest.Dial(t, tcp)).Register(ctx, &registry.NetworkServiceEndpoint{
		Name: "nse-1", Url: "tcp://10.0.0.1:5003", NetworkServiceNames: []string{"icmp-responder"},
	})
	require.NoError(t, err)
	require.Equal(t, []string{"nse-1"}, findNames(t, ctx, registry.NewNetworkServiceEndpointRegistryClient(r.cc)), "one registry behind both URLs")
	for _, v := range []string{"NSM_PROXY_REGISTRY_URL"} {
		require.Contains(t, r.Stderr(), `msg="accepted, not used yet" cmd=cmd-registry-memory variable=`+v+" why=")
	}
	require.Zero(t, r.Stop())
}

func TestRegistersFindsExpiresAndStops(t *testing.T) {
	const period = time.Second
	dir := cmdtest.TempDir(t)
	r := startRegistry(t, "unix://"+filepath.Join(dir, "registry.sock"), "NSM_EXPIRE_PERIOD="+period.String())
	nses := registry.NewNetworkServiceEndpointRegistryClient(r.cc)
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()

	watch, err := nses.Find(ctx, &registry.NetworkServiceEndpointQuery{
		NetworkServiceEndpoint: &registry.NetworkServiceEndpoint{NetworkServiceNames: []string{"icmp-responder"}},
		Watch:                  true,
	})
	require.NoError(t, err)
	recv := func() *registry.NetworkServiceEndpointResponse {
		resp, err := watch.Recv()
		require.NoError(t, err)
		return resp
	}

	// An endpoint that asks for no lifetime gets the expire period, and is gone after it.
	before := time.Now()
	got, err := nses.Register(ctx, &registry.NetworkServiceEndpoint{
		Name: "nse-short", NetworkServiceNames: []string{"icmp-responder"}, Url: "tcp://10.0.0.1:5001",
	})
	require.NoError(t, err)
	require.WithinRange(t, got.GetExpirationTime().AsTime(), before.Add(period), time.Now().Add(period))
	require.Equal(t, []string{cmdtest.ID(t, "test").String(), cmdtest.ID(t, "cmd").String()}, got.GetPathIds(), "the verified path: the test, then the registry")
	seen := recv()
	require.False(t, seen.GetDeleted())
	require.Equal(t, "nse-short", seen.GetNetworkServiceEndpoint().GetName())

	// One that asks for an hour stays, and is owned by its registrant.
	long := &registry.NetworkServiceEndpoint{
		Name: "nse-long", NetworkServiceNames: []string{"icmp-responder"}, Url: "tcp://[fd00::1]:5001",
		PathIds: []string{"nse-long"}, ExpirationTime: timestamppb.New(time.Now().Add(time.Hour)),
	}
	_, err = nses.Register(ctx, long)
	require.NoError(t, err)
	require.Equal(t, "nse-long", recv().GetNetworkServiceEndpoint().GetName())
	// Another identity may not take it, whatever path_ids it writes.
	intruder := registry.NewNetworkServiceEndpointRegistryClient(cmdtest.DialAs(t, "unix://"+filepath.Join(dir, "registry.sock"), "intruder"))
	_, err = intruder.Register(ctx, &registry.NetworkServiceEndpoint{Name: "nse-long", Url: "tcp://[fd00::2]:5001",
		PathIds: []string{cmdtest.ID(t, "test").String()}})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

	expired := recv() // after the period, no sleep: the registry tells the watcher
	require.True(t, expired.GetDeleted())
	require.Equal(t, "nse-short", expired.GetNetworkServiceEndpoint().GetName())
	require.Equal(t, []string{"nse-long"}, findNames(t, ctx, nses))

	_, err = nses.Unregister(ctx, long)
	require.NoError(t, err)
	require.True(t, recv().GetDeleted())
	require.Empty(t, findNames(t, ctx, nses))

	// A network service registered without payload carries IP.
	nss := registry.NewNetworkServiceRegistryClient(r.cc)
	_, err = nss.Register(ctx, &registry.NetworkService{Name: "icmp-responder"})
	require.NoError(t, err)
	stream, err := nss.Find(ctx, &registry.NetworkServiceQuery{NetworkService: &registry.NetworkService{Name: "icmp-responder"}})
	require.NoError(t, err)
	ns, err := stream.Recv()
	require.NoError(t, err)
	require.Equal(t, "IP", ns.GetNetworkService().GetPayload())

	require.Zero(t, r.Stop())
	_, err = watch.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "the watch ends with the registry: %v", err)
	require.Contains(t, r.Stderr(), "msg=serving")
	require.Contains(t, r.Stderr(), "msg=stopped")
	_, err = os.Stat(r.sock)
	require.ErrorIs(t, err, os.ErrNotExist, "the socket is removed")
}

func findNames(t *testing.T, ctx context.Context, c registry.NetworkServiceEndpointRegistryClient) []string {
	stream, err := c.Find(ctx, &registry.NetworkServiceEndpointQuery{NetworkServiceEndpoint: &registry.NetworkServiceEndpoint{}})
	require.NoError(t, err)
	var names []string
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return names
		}
		require.NoError(t, err)
		names = append(names, resp.GetNetworkServiceEndpoint().GetName())
	}
}

func TestInterruptStopsLikeTerminate(t *testing.T) {
	r := startRegistry(t, "unix://"+filepath.Join(cmdtest.TempDir(t), "registry.sock"))
	r.Signal(os.Interrupt)
	require.Zero(t, r.Wait())
	require.Contains(t, r.Stderr(), "msg=stopped")
}
