package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "vwire.dev/sdk-k8s/pkg/tools/k8s/apis/networkservicemesh.io/v1"
	"vwire.dev/sdk-k8s/pkg/tools/kubetest"
	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
)

var bin string // the command, built once

func TestMain(m *testing.M) {
	cmdtest.Main(m, map[string]*string{".": &bin})
}

const crds = "../sdk-k8s/deployments/crds"

func TestHelpAndREADMEListEveryVariable(t *testing.T) {
	cmdtest.CheckDocs(t, bin, &config{})
}

func TestBadConfigurationStopsWithOneLine(t *testing.T) {
	noCRDs := kubetest.Start(t)
	missing := filepath.Join(cmdtest.TempDir(t), "kubeconfig")
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"bad namespace", []string{"NSM_NAMESPACE=NSM_System"},
			`cmd-registry-k8s: NSM_NAMESPACE: "NSM_System": not a namespace name: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`},
		{"no kubeconfig file", []string{"KUBECONFIG=" + missing},
			"cmd-registry-k8s: no API server from KUBECONFIG " + missing + ": stat " + missing + ": no such file or directory; set KUBECONFIG to a kubeconfig file, or run in a pod with a service account"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line, _ := cmdtest.Fails(t, bin, append([]string{"NSM_LOG_LEVEL=ERROR"}, tc.env...))
			require.Equal(t, tc.want, line)
		})
	}
	line, _ := cmdtest.Fails(t, bin, []string{"NSM_LOG_LEVEL=ERROR", "KUBECONFIG=" + noCRDs.Kubeconfig, "NSM_NAMESPACE=nsm-system"})
	require.Contains(t, line, "listing NSM's objects in namespace nsm-system: the server could not find the requested resource (get networkservices.networkservicemesh.io); are the CRDs installed (deployments-k8s/apps/registry-k8s)")
}

// TestTwoReplicas runs two registries on one API server, registers through one over gRPC and
// finds and watches through the other; the records are NSM's objects.
func TestTwoReplicas(t *testing.T) {
	c := kubetest.Start(t, kubetest.WithCRDs(crds))
	dir := cmdtest.TempDir(t)
	replica := func(name string) (registry.NetworkServiceEndpointRegistryClient, *cmdtest.Process) {
		sock := "unix://" + filepath.Join(dir, name+".sock")
		p := cmdtest.Start(t, bin, []string{"NSM_LOG_LEVEL=DEBUG", "NSM_LISTEN_ON=" + sock, "KUBECONFIG=" + c.Kubeconfig, "NSM_NAME=" + name})
		cc := cmdtest.Dial(t, sock)
		cmdtest.WaitServing(t, cc)
		return registry.NewNetworkServiceEndpointRegistryClient(cc), p
	}
	a, pa := replica("registry-a")
	b, pb := replica("registry-b")
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()

	watch, err := b.Find(ctx, &registry.NetworkServiceEndpointQuery{
		NetworkServiceEndpoint: &registry.NetworkServiceEndpoint{NetworkServiceNames: []string{"icmp-responder"}},
		Watch:                  true,
	})
	require.NoError(t, err)
	nse := &registry.NetworkServiceEndpoint{Name: "nse-1", Url: "tcp://[fd00::1]:5003", NetworkServiceNames: []string{"icmp-responder"}}
	got, err := a.Register(ctx, nse)
	require.NoError(t, err)
	require.Equal(t, []string{cmdtest.ID(t, "test").String(), cmdtest.ID(t, "cmd/registry-a").String()}, got.GetPathIds(), "the verified path: the test, then the registry")
	require.NotNil(t, got.GetExpirationTime(), "the expire period")

	seen, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, "nse-1", seen.GetNetworkServiceEndpoint().GetName())
	require.Equal(t, []string{"nse-1"}, findNames(t, ctx, b))

	client, err := v1.NewForConfig(c.Config)
	require.NoError(t, err)
	obj, err := client.NetworkServiceEndpoints("default").Get(ctx, "nse-1", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, nse.GetUrl(), obj.Spec.GetUrl())

	_, err = a.Register(ctx, &registry.NetworkServiceEndpoint{Name: "Not_A_Kubernetes_Name", Url: "tcp://10.0.0.1:5003"})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)

	_, err = b.Unregister(ctx, got)
	require.NoError(t, err)
	gone, err := watch.Recv()
	require.NoError(t, err)
	require.True(t, gone.GetDeleted())
	require.Empty(t, findNames(t, ctx, a))

	require.Zero(t, pa.Stop())
	require.Zero(t, pb.Stop())
	require.Contains(t, pa.Stderr(), "msg=serving")
	_, err = os.Stat(filepath.Join(dir, "registry-a.sock"))
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
