package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"vwire.dev/sdk-k8s/pkg/tools/kubetest"
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
	kubeconfig := filepath.Join(dir, "kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, []byte("not: [a kubeconfig"), 0o600))
	for _, tc := range []struct {
		name string
		env  []string // NSM_CONTAINER_IMAGES=ghcr.io/vwire/cmd-nsc:v1 unless env sets it
		want string
	}{
		{"no client image", []string{"NSM_CONTAINER_IMAGES"},
			"NSM_CONTAINER_IMAGES: not set; it is required: the client's image"},
		{"empty client image list", []string{"NSM_CONTAINER_IMAGES="},
			"NSM_CONTAINER_IMAGES: empty; give the client's image, e.g. ghcr.io/vwire/cmd-nsc:v1"},
		{"image that is no container name", []string{"NSM_CONTAINER_IMAGES=ghcr.io/vwire/Cmd_NSC:v1"},
			`NSM_CONTAINER_IMAGES: "ghcr.io/vwire/Cmd_NSC:v1": runs as container "Cmd_NSC": a lowercase RFC 1123 label must consist of`},
		{"init image of the client's name", []string{"NSM_INIT_CONTAINER_IMAGES=ghcr.io/nsm/cmd-nsc:v2"},
			`NSM_CONTAINER_IMAGES: ghcr.io/vwire/cmd-nsc:v1 runs as container "cmd-nsc", a name NSM_INIT_CONTAINER_IMAGES has already; give each image its own name`},
		{"init image named as the waiting container", []string{"NSM_INIT_CONTAINER_IMAGES=cmd-nsc-wait"},
			`NSM_INIT_CONTAINER_IMAGES: cmd-nsc-wait runs as container "cmd-nsc-wait", a name NSM_CONTAINER_IMAGES has already; give each image its own name`},
		{"spire mode", []string{"NSM_WEBHOOK_MODE=spire"},
			`NSM_WEBHOOK_MODE: "spire": needs SPIFFE, which vwire has not yet; use selfregister, or give NSM_CERT_FILE_PATH and NSM_KEY_FILE_PATH`},
		{"variable the webhook sets", []string{"NSM_ENVS=NSM_LOG_LEVEL=DEBUG,NSM_NAME=me"},
			"NSM_ENVS: NSM_NAME is set by the webhook itself; remove it"},
		{"the client URLs' variable", []string{"NSM_ENVS=NSM_NETWORK_SERVICES=kernel://x"},
			"NSM_ENVS: NSM_NETWORK_SERVICES is set by the webhook itself; remove it"},
		{"the variable of the client URLs' file", []string{"NSM_ENVS=NSM_NETWORK_SERVICES_FILE=/x"},
			"NSM_ENVS: NSM_NETWORK_SERVICES_FILE is set by the webhook itself; remove it"},
		{"variable without a value", []string{"NSM_ENVS=NSM_LOG_LEVEL"},
			`NSM_ENVS: "NSM_LOG_LEVEL": not NAME=value`},
		{"variable twice", []string{"NSM_ENVS=A=1,A=2"},
			`NSM_ENVS: "A=1,A=2": item 2 "A=2": A given twice`},
		{"not a quantity", []string{"NSM_SIDECAR_LIMITS_CPU=lots"},
			`NSM_SIDECAR_LIMITS_CPU: "lots": not a quantity; write 80Mi, 1Gi, 200m, 1`},
		{"not a service name", []string{"NSM_SERVICE_NAME=Webhook.svc"},
			`NSM_SERVICE_NAME: "Webhook.svc": a lowercase RFC 1123 label must consist of`},
		{"listen on a unix socket", []string{"NSM_LISTEN_ON=unix:///webhook.sock"},
			`NSM_LISTEN_ON: "unix:///webhook.sock": serves HTTPS; use tcp://host:port or tcp://:443`},
		{"plain http URL", []string{"NSM_WEBHOOK_URL=http://127.0.0.1:8443/mutate"},
			`NSM_WEBHOOK_URL: "http://127.0.0.1:8443/mutate": not an https URL with a host; write https://127.0.0.1:8443/mutate`},
		{"certificate without key", []string{"NSM_CERT_FILE_PATH=/tls.crt"},
			"NSM_CERT_FILE_PATH and NSM_KEY_FILE_PATH: give both or neither"},
		{"no requests to the API server", []string{"NSM_KUBELET_QPS=0"},
			"NSM_KUBELET_QPS: 0: must be positive"},
		{"no way to the API server", nil,
			"no way to the API server: KUBECONFIG is not set, and not in a pod (unable to load in-cluster configuration"},
		{"bad kubeconfig", []string{"KUBECONFIG=" + kubeconfig},
			"KUBECONFIG: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := append([]string{"NSM_LOG_LEVEL=ERROR", "NSM_CONTAINER_IMAGES=ghcr.io/vwire/cmd-nsc:v1"}, tc.env...)
			if len(tc.env) > 0 && tc.env[0] == "NSM_CONTAINER_IMAGES" { // not set at all
				env = env[:1]
			}
			line, _ := cmdtest.Fails(t, bin, env)
			require.True(t, strings.HasPrefix(line, "cmd-admission-webhook-k8s: "+tc.want), "got %s", line)
		})
	}
}

// webhook starts the command in URL mode against the cluster, and waits until it registered.
func webhook(t *testing.T, cluster *kubetest.Cluster) *cmdtest.Process {
	p := cmdtest.Start(t, bin, []string{
		"KUBECONFIG=" + cluster.Kubeconfig,
		"NSM_NAME=vwire-webhook",
		"NSM_NAMESPACE=nsm-system",
		"NSM_LISTEN_ON=tcp://127.0.0.1:0",
		"NSM_WEBHOOK_URL=https://127.0.0.1/mutate",
		"NSM_CONTAINER_IMAGES=ghcr.io/vwire/cmd-nsc:v1",
		"NSM_LABELS=spiffe.io/spiffe-id:true",
		"NSM_ENVS=NSM_LOG_LEVEL=DEBUG",
	})
	p.WaitStderr("msg=registered")
	return p
}

func annotated(name, services string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"networkservicemesh.io": services}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "alpine"}}},
	}
}

// TestInjectsThroughTheAPIServer: with the webhook registered, the API server stores an
// annotated pod with the client, and everything else as it was given; after the webhook
// stopped, its configuration is gone.
func TestInjectsThroughTheAPIServer(t *testing.T) {
	cluster := kubetest.Start(t)
	api, err := kubernetes.NewForConfig(cluster.Config)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	for _, ns := range []string{"apps", "nsm-system"} {
		_, err := api.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		require.NoError(t, err)
		// The controller that makes every namespace's default service account does not run here.
		_, err = api.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	pods := api.CoreV1().Pods("apps")

	// A configuration a killed webhook left behind is taken over by the next one.
	killed := webhook(t, cluster)
	killed.Signal(syscall.SIGKILL)
	killed.Wait()
	p := webhook(t, cluster)

	conf, err := api.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "vwire-webhook", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, conf.Webhooks, 1)
	hook := conf.Webhooks[0]
	require.Equal(t, "vwire-webhook.networkservicemesh.io", hook.Name)
	require.Equal(t, admissionregv1.Fail, *hook.FailurePolicy)
	require.Equal(t, admissionregv1.SideEffectClassNone, *hook.SideEffects)
	require.Equal(t, []string{"v1"}, hook.AdmissionReviewVersions)
	require.Equal(t, []string{"kube-system", "nsm-system"}, hook.NamespaceSelector.MatchExpressions[0].Values)
	require.True(t, strings.HasPrefix(*hook.ClientConfig.URL, "https://127.0.0.1:"), *hook.ClientConfig.URL)
	require.NotEmpty(t, hook.ClientConfig.CABundle)

	// The API server calls a webhook once its watch of the configurations saw it: until then a
	// pod would be stored as it is. Dry runs show when.
	require.Eventually(t, func() bool {
		pod, err := pods.Create(ctx, annotated("probe", "kernel://icmp-responder"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && len(pod.Spec.InitContainers) > 0
	}, cmdtest.WaitLimit, 50*time.Millisecond, "the API server never called the webhook")

	_, err = pods.Create(ctx, annotated("client", "kernel://icmp-responder/nsm-1,kernel://vpn@corp.example"), metav1.CreateOptions{})
	require.NoError(t, err)
	pod, err := pods.Get(ctx, "client", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, pod.Spec.InitContainers, 2)
	sidecar, wait := pod.Spec.InitContainers[0], pod.Spec.InitContainers[1]
	require.Equal(t, "cmd-nsc", sidecar.Name)
	require.Equal(t, corev1.ContainerRestartPolicyAlways, *sidecar.RestartPolicy)
	require.Equal(t, "cmd-nsc-wait", wait.Name)
	require.Equal(t, []string{"wait"}, wait.Args)
	require.Contains(t, sidecar.Env, corev1.EnvVar{Name: "NSM_NETWORK_SERVICES", Value: "kernel://icmp-responder/nsm-1,kernel://vpn@corp.example"})
	require.Contains(t, sidecar.Env, corev1.EnvVar{Name: "NSM_LOG_LEVEL", Value: "DEBUG"})
	require.Equal(t, "200m", sidecar.Resources.Limits.Cpu().String())
	require.Equal(t, []string{"app"}, []string{pod.Spec.Containers[0].Name})
	require.Len(t, pod.Spec.Containers, 1)
	vols := map[string]corev1.VolumeSource{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v.VolumeSource
	}
	require.Equal(t, "/var/lib/networkservicemesh", vols["nsm-socket"].HostPath.Path)
	// The API server takes the annotation's file (it checks the field path), which the client follows.
	require.Equal(t, "metadata.annotations['networkservicemesh.io']", vols["nsm-network-services"].DownwardAPI.Items[0].FieldRef.FieldPath)
	require.Contains(t, sidecar.Env, corev1.EnvVar{Name: "NSM_NETWORK_SERVICES_FILE", Value: "/run/vwire/network-services"})
	require.Equal(t, "true", pod.Labels["spiffe.io/spiffe-id"])

	plain := annotated("plain", "")
	plain.Annotations = nil
	_, err = pods.Create(ctx, plain, metav1.CreateOptions{})
	require.NoError(t, err)
	pod, err = pods.Get(ctx, "plain", metav1.GetOptions{})
	require.NoError(t, err)
	require.Empty(t, pod.Spec.InitContainers)
	require.Empty(t, pod.Labels)

	_, err = pods.Create(ctx, annotated("bad", "kernel://icmp-responder,kernel://"), metav1.CreateOptions{})
	require.ErrorContains(t, err, `admission webhook "vwire-webhook.networkservicemesh.io" denied the request: annotation "networkservicemesh.io" of the pod: "kernel://icmp-responder,kernel://": item 2 "kernel://": url host: missing network service`)
	_, err = pods.Get(ctx, "bad", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "a refused pod is not stored: %v", err)

	// The webhook's own namespace is never sent to it.
	_, err = api.CoreV1().Pods("nsm-system").Create(ctx, annotated("own", "kernel://icmp-responder"), metav1.CreateOptions{})
	require.NoError(t, err)
	pod, err = api.CoreV1().Pods("nsm-system").Get(ctx, "own", metav1.GetOptions{})
	require.NoError(t, err)
	require.Empty(t, pod.Spec.InitContainers)

	// No controller runs here, so the Deployment stays as the webhook left it.
	replicas := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "clients"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "clients"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "clients"}, Annotations: map[string]string{"networkservicemesh.io": "kernel://icmp-responder"}},
				Spec:       annotated("", "").Spec,
			},
		},
	}
	_, err = api.AppsV1().Deployments("apps").Create(ctx, dep, metav1.CreateOptions{})
	require.NoError(t, err)
	dep, err = api.AppsV1().Deployments("apps").Get(ctx, "clients", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"cmd-nsc", "cmd-nsc-wait"}, []string{dep.Spec.Template.Spec.InitContainers[0].Name, dep.Spec.Template.Spec.InitContainers[1].Name})
	require.Equal(t, map[string]string{"app": "clients", "spiffe.io/spiffe-id": "true"}, dep.Spec.Template.Labels)

	require.Zero(t, p.Stop(), p.Stderr())
	_, err = api.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "vwire-webhook", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "the configuration is gone: %v", err)
	require.Contains(t, p.Stderr(), `msg="injected the client" cmd=cmd-admission-webhook-k8s kind=Pod namespace=apps name=client`)
}
