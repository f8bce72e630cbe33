package main

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"vwire.dev/sdk/pkg/networkservice/common/dial"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"vwire.dev/sdk-k8s/pkg/tools/kubetest"
	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
)

var supplierBin, registryBin string // built once

func TestMain(m *testing.M) {
	cmdtest.Main(m, map[string]*string{".": &supplierBin, "vwire.dev/cmd-registry-memory": &registryBin})
}

func TestHelpAndREADMEListEveryVariable(t *testing.T) {
	cmdtest.CheckDocs(t, supplierBin, &config{})
}

// podTemplate is the example's template, deployments-k8s/examples/features/scale-from-zero.
const podTemplate = "../deployments-k8s/examples/features/scale-from-zero/pod-template.yaml"

func TestBadConfigurationStopsWithOneLine(t *testing.T) {
	dir := cmdtest.TempDir(t)
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
		return path
	}
	deployment := write("deployment.yaml", "apiVersion: apps/v1\nkind: Deployment\n")
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"no service", []string{"NSM_SERVICE_NAMES="}, `NSM_SERVICE_NAMES: "": no name; give at least one`},
		{"service unset", nil, "NSM_SERVICE_NAMES: not set (nor NSM_SERVICE_NAME); it is required: the network services it supplies endpoints of"},
		{"no template file", []string{"NSM_SERVICE_NAME=scale-from-zero", "NSM_POD_DESCRIPTION_FILE=" + missing},
			"NSM_POD_DESCRIPTION_FILE: open " + missing + ": no such file or directory"},
		{"template of another kind", []string{"NSM_SERVICE_NAMES=scale-from-zero", "NSM_POD_DESCRIPTION_FILE=" + deployment},
			"pod template " + deployment + `: describes apiVersion "apps/v1" kind "Deployment"; want apiVersion v1, kind Pod`},
		{"bad namespace", []string{"NSM_SERVICE_NAMES=scale-from-zero", "NSM_NAMESPACE=NS"}, `NSM_NAMESPACE: "NS": not a namespace name: `},
		{"no kubeconfig file", []string{"NSM_SERVICE_NAMES=scale-from-zero", "NSM_POD_DESCRIPTION_FILE=" + podTemplate, "KUBECONFIG=" + missing},
			"no API server from KUBECONFIG " + missing + ": stat " + missing + ": no such file or directory; set KUBECONFIG to a kubeconfig file, or run in a pod with a service account"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line, _ := cmdtest.Fails(t, supplierBin, append([]string{"NSM_LOG_LEVEL=ERROR"}, tc.env...))
			require.True(t, strings.HasPrefix(line, "cmd-nse-supplier-k8s: "+tc.want), "got %s", line)
		})
	}
}

// TestSuppliesAnEndpointOnTheClientsNode runs the supplier with a registry and a real API server
// (no kubelet: the test registers the endpoint the pod would run). A client's Request makes the
// pod from the example's template on the client's node and is answered, once the endpoint is
// registered, with Unavailable: ask again. A supplier that restarted finds the same pod.
func TestSuppliesAnEndpointOnTheClientsNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*cmdtest.WaitLimit)
	defer cancel()
	api := kubetest.Start(t)
	kube, err := kubernetes.NewForConfig(api.Config)
	require.NoError(t, err)
	// No controller-manager makes the namespace's service account; pods need it.
	_, err = kube.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	pods := kube.CoreV1().Pods("default")

	dir := cmdtest.TempDir(t)
	regURL := "unix://" + filepath.Join(dir, "registry.sock")
	cmdtest.Start(t, registryBin, []string{"NSM_LISTEN_ON=" + regURL})
	regCC := cmdtest.Dial(t, regURL)
	nses := registry.NewNetworkServiceEndpointRegistryClient(regCC)
	supplierURL := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "supplier.sock")}
	startSupplier := func() *cmdtest.Process {
		p := cmdtest.Start(t, supplierBin, []string{
			"NSM_LOG_LEVEL=DEBUG",
			"NSM_SERVICE_NAME=scale-from-zero", // NSM's name of the variable
			"NSM_LABELS=app:icmp-responder-supplier",
			"NSM_POD_DESCRIPTION_FILE=" + podTemplate,
			"NSM_CONNECT_TO=" + regURL,
			"NSM_PASS_SOCKET=false", // a registry, unlike an nsmgr, cannot dial a socket passed to it
			"NSM_LISTEN_ON=" + supplierURL.String(),
			"KUBECONFIG=" + api.Kubeconfig,
		})
		p.WaitStderr("msg=registered")
		return p
	}
	supplier := startSupplier()
	self := find(t, ctx, nses, "nse-supplier-k8s")
	require.Equal(t, supplierURL.String(), self.GetUrl())
	require.Equal(t, map[string]string{"app": "icmp-responder-supplier"}, self.GetNetworkServiceLabels()["scale-from-zero"].GetLabels())

	request := func() error {
		clientCtx, stop := context.WithCancel(ctx)
		defer stop()
		nsc := client.NewClient(clientCtx, client.WithName("nsc"), client.WithClientURL(supplierURL), client.WithoutRetry(),
			client.WithTokenGenerator(cmdtest.Tokens(t, "nsc", time.Minute)), client.WithDialOptions(dial.WithDialOptions(cmdtest.DialOptions(t, "nsc")...)))
		_, err := nsc.Request(ctx, &networkservice.NetworkServiceRequest{
			Connection:           &networkservice.Connection{NetworkService: "scale-from-zero", Labels: map[string]string{"nodeName": "node-1"}},
			MechanismPreferences: []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: kernel.MECHANISM}},
		})
		return err
	}
	answered := make(chan error, 1)
	go func() { answered <- request() }()
	var pod *corev1.Pod
	require.Eventually(t, func() bool {
		pod, err = pods.Get(ctx, "nse-icmp-responder-node-1", metav1.GetOptions{})
		return err == nil
	}, cmdtest.WaitLimit, 10*time.Millisecond, "no pod; supplier stderr:\n%s", supplier.Stderr())
	require.Equal(t, "node-1", pod.Spec.NodeName)
	require.Equal(t, "ghcr.io/vwire/cmd-nse-icmp-responder:dev", pod.Spec.Containers[0].Image)

	// What the pod's endpoint does once it runs: register under the pod's name.
	_, err = nses.Register(ctx, &registry.NetworkServiceEndpoint{
		Name: pod.Name, NetworkServiceNames: []string{"scale-from-zero"}, Url: "tcp://10.0.0.1:5003",
	})
	require.NoError(t, err)
	err = <-answered
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), `started an endpoint of "scale-from-zero" on node "node-1"; request again`)

	require.Zero(t, supplier.Stop())
	require.Contains(t, supplier.Stderr(), "msg=stopped")
	supplier = startSupplier()
	err = request()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	// Its output reaches the test through a pipe, maybe after the answer: wait for it.
	supplier.WaitStderr(`msg="found pod" cmd=cmd-nse-supplier-k8s pod=nse-icmp-responder-node-1`)
	list, err := pods.List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, list.Items, 1)
	require.Equal(t, pod.UID, list.Items[0].UID, "the restarted supplier made no second pod")
	require.Zero(t, supplier.Stop())
}

// find returns the endpoint registered as name.
func find(t *testing.T, ctx context.Context, nses registry.NetworkServiceEndpointRegistryClient, name string) *registry.NetworkServiceEndpoint {
	stream, err := nses.Find(ctx, &registry.NetworkServiceEndpointQuery{NetworkServiceEndpoint: &registry.NetworkServiceEndpoint{Name: name}}, grpc.WaitForReady(true))
	require.NoError(t, err)
	resp, err := stream.Recv()
	require.NoError(t, err)
	return resp.GetNetworkServiceEndpoint()
}
