package supplier_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	"vwire.dev/cmd-nse-supplier-k8s/internal/supplier"
	"vwire.dev/sdk-k8s/pkg/tools/kubetest"
	"vwire.dev/sdk/pkg/registry/common/memory"
	regnext "vwire.dev/sdk/pkg/registry/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	ns      = "supplier-test"
	service = "scale-from-zero"
)

// template is NSM's way of writing it: over the connection's labels.
const template = `apiVersion: v1
kind: Pod
metadata:
  name: nse-{{ index .Labels "nodeName" }}
  labels:
    app: nse-icmp-responder
spec:
  restartPolicy: Never
  containers:
    - name: nse
      image: ghcr.io/vwire/cmd-nse-icmp-responder:dev
      env:
        - name: NSM_SERVICE_NAMES
          value: {{ .NetworkService }}
        - name: NSM_LABELS
          value: app=nse-icmp-responder,nodeName={{ .NodeName }}
`

func TestParseTemplateRefusesWhatCannotWork(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"template syntax", "kind: {{ .Nope", "pod template pod.yaml: template: pod.yaml:1: unclosed action"},
		{"unknown field of the data", "kind: {{ .Client }}", `can't evaluate field Client`},
		{"a loop", "{{ range 100000000000 }}{{ end }}", `pod template pod.yaml: {{range 100000000000}}{{end}}: only {{ .NetworkService }}, {{ .NodeName }} and {{ index .Labels "nodeName" }} may be used`},
		{"a call", "kind: {{ printf \"%099999999d\" 1 }}", `{{printf "%099999999d" 1}}: only`},
		{"not YAML", "apiVersion: v1\nkind: Pod\n  : [", "pod template pod.yaml: not YAML"},
		{"not a pod", "apiVersion: apps/v1\nkind: Deployment\n", `describes apiVersion "apps/v1" kind "Deployment"; want apiVersion v1, kind Pod`},
		{"unknown field", "apiVersion: v1\nkind: Pod\nspec:\n  containerz: []\n", `not a pod: error unmarshaling JSON: while decoding JSON: json: unknown field "containerz"`},
		{"no container", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a-{{ .NodeName }}\n", "spec.containers is empty"},
		{"one name for every node", strings.Replace(template, `nse-{{ index .Labels "nodeName" }}`, "nse", 1), `metadata.name "nse" is the same on every node`},
		{"a fixed node", strings.Replace(template, "spec:\n", "spec:\n  nodeName: node-1\n", 1), `spec.nodeName is "node-1" for a client on node "node-a"`},
		{"another namespace", strings.Replace(template, "metadata:\n", "metadata:\n  namespace: kube-system\n", 1), `metadata.namespace is "kube-system", but the supplier makes pods in NSM_NAMESPACE=supplier-test`},
		{"a bad name", strings.Replace(template, "name: nse-", "name: NSE_", 1), `metadata.name "NSE_node-a" for node "node-a": a lowercase RFC 1123 subdomain`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := supplier.ParseTemplate("pod.yaml", []byte(tc.text), service, ns)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestPodName(t *testing.T) {
	for _, tc := range []struct{ service, node, want string }{
		{"icmp-responder", "node-1", "icmp-responder-node-1"},
		{"icmp-responder", "Node.Example.com", "icmp-responder-node-example-com-"},
		{"icmp-responder", strings.Repeat("n", 80), "icmp-responder-" + strings.Repeat("n", 20)},
	} {
		got := supplier.PodName(tc.service, tc.node)
		require.LessOrEqual(t, len(got), 63, got)
		require.True(t, strings.HasPrefix(got, tc.want), "%s for %s on %s", got, tc.service, tc.node)
		require.Equal(t, got, supplier.PodName(tc.service, tc.node), "the same every time")
	}
	require.NotEqual(t, supplier.PodName("s", "a.b"), supplier.PodName("s", "a-b"), "nodes that differ get names that differ")
}

func FuzzParseTemplate(f *testing.F) {
	f.Add(template)
	f.Add("apiVersion: v1\nkind: Pod\n")
	f.Add("{{ range . }}")
	f.Fuzz(func(t *testing.T, text string) {
		tmpl, err := supplier.ParseTemplate("pod.yaml", []byte(text), service, ns)
		if err != nil {
			return
		}
		pod, err := tmpl.Pod(service, "node-1")
		require.NoError(t, err, "a template that passed the check gives a pod")
		require.Equal(t, "node-1", pod.Spec.NodeName)
		require.NotEmpty(t, pod.Name)
	})
}

// cluster is a real API server with the test's namespace, and an admin's view of its pods.
func cluster(t *testing.T) typedcorev1.PodInterface {
	c := kubetest.Start(t)
	client, err := kubernetes.NewForConfig(c.Config)
	require.NoError(t, err)
	ctx := t.Context()
	_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	// No controller-manager makes it here; pods need their service account.
	_, err = client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	return client.CoreV1().Pods(ns)
}

func newSupplier(t *testing.T, pods typedcorev1.PodInterface, reg regnext.NSE, timeout time.Duration) *supplier.Supplier {
	tmpl, err := supplier.ParseTemplate("pod.yaml", []byte(template), service, ns)
	require.NoError(t, err)
	return supplier.New(pods, ns, tmpl, reg, timeout)
}

// start runs Start in the background; the channel gets its result.
func start(ctx context.Context, s *supplier.Supplier, node string) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx, node, service) }()
	return done
}

// made waits for the pod of name to exist and returns it.
func made(t *testing.T, pods typedcorev1.PodInterface, name string) *corev1.Pod {
	var pod *corev1.Pod
	require.Eventually(t, func() bool {
		var err error
		pod, err = pods.Get(t.Context(), name, metav1.GetOptions{})
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "pod %s was not made", name)
	return pod
}

func register(t *testing.T, reg regnext.NSE, name string) {
	_, err := reg.Register(t.Context(), &registry.NetworkServiceEndpoint{Name: name, NetworkServiceNames: []string{service}, Url: "tcp://10.0.0.1:5003"})
	require.NoError(t, err)
}

func TestStartMakesThePodOnTheNodeAndReusesIt(t *testing.T) {
	pods := cluster(t)
	reg := memory.NewNSE()
	s := newSupplier(t, pods, reg, time.Minute)
	ctx := t.Context()

	done := start(ctx, s, "node-1")
	pod := made(t, pods, "nse-node-1")
	require.Equal(t, "node-1", pod.Spec.NodeName)
	require.Equal(t, "ghcr.io/vwire/cmd-nse-icmp-responder:dev", pod.Spec.Containers[0].Image, "the template's")
	require.Equal(t, []corev1.EnvVar{{Name: "NSM_SERVICE_NAMES", Value: service}, {Name: "NSM_LABELS", Value: "app=nse-icmp-responder,nodeName=node-1"}}, pod.Spec.Containers[0].Env)
	require.Equal(t, "nse-supplier-k8s", pod.Labels[supplier.ManagedBy])
	require.Equal(t, "nse-icmp-responder", pod.Labels["app"])
	select {
	case err := <-done:
		t.Fatalf("Start returned before the endpoint registered: %v", err)
	default:
	}
	register(t, reg, "nse-node-1")
	require.NoError(t, <-done)

	// A second client of the node, and a supplier that restarted, find the same pod.
	require.NoError(t, s.Start(ctx, "node-1", service))
	again := newSupplier(t, pods, reg, time.Minute)
	require.NoError(t, again.Start(ctx, "node-1", service))
	list, err := pods.List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, list.Items, 1)
	require.Equal(t, pod.UID, list.Items[0].UID, "the pod was not made again")
}

func TestAFailedPodIsReportedAndDeleted(t *testing.T) {
	pods := cluster(t)
	s := newSupplier(t, pods, memory.NewNSE(), time.Minute)
	done := start(t.Context(), s, "node-2")
	pod := made(t, pods, "nse-node-2")

	pod.Status.Phase = corev1.PodPending
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "nse", State: corev1.ContainerState{
		Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull", Message: "image is not present"}}}}
	_, err := pods.UpdateStatus(t.Context(), pod, metav1.UpdateOptions{})
	require.NoError(t, err)
	err = <-done
	require.ErrorContains(t, err, "pod supplier-test/nse-node-2 on node node-2 cannot start container nse: ErrImageNeverPull: image is not present")
	gone, err := pods.Get(t.Context(), "nse-node-2", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err) || gone.DeletionTimestamp != nil, "the pod is deleted: %v", err)
}

func TestAPodThatEndedIsMadeAnew(t *testing.T) {
	pods := cluster(t)
	reg := memory.NewNSE()
	s := newSupplier(t, pods, reg, time.Minute)
	register(t, reg, "nse-node-1")
	require.NoError(t, s.Start(t.Context(), "node-1", service))
	old := made(t, pods, "nse-node-1")
	old.Status.Phase = corev1.PodSucceeded
	_, err := pods.UpdateStatus(t.Context(), old, metav1.UpdateOptions{})
	require.NoError(t, err)

	require.NoError(t, s.Start(t.Context(), "node-1", service))
	now := made(t, pods, "nse-node-1")
	require.NotEqual(t, old.UID, now.UID)
}

func TestNoEndpointWithinTheTimeout(t *testing.T) {
	pods := cluster(t)
	s := newSupplier(t, pods, memory.NewNSE(), 300*time.Millisecond)
	err := s.Start(t.Context(), "node-3", service)
	require.ErrorContains(t, err, "no endpoint nse-node-3 of scale-from-zero registered within NSM_START_TIMEOUT=300ms: pod supplier-test/nse-node-3 on node node-3 is Pending; no kubelet has reported on it: is node node-3 in the cluster and ready?")
}

func TestACallerThatGivesUpLeavesThePod(t *testing.T) {
	pods := cluster(t)
	s := newSupplier(t, pods, memory.NewNSE(), time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	done := start(ctx, s, "node-1")
	pod := made(t, pods, "nse-node-1")
	cancel()
	require.ErrorContains(t, <-done, "the request ended before its endpoint registered; the pod stays for the next request")
	still, err := pods.Get(t.Context(), pod.Name, metav1.GetOptions{})
	require.NoError(t, err)
	require.Nil(t, still.DeletionTimestamp)
}

func TestReapDeletesThePodsThatEnded(t *testing.T) {
	pods := cluster(t)
	s := newSupplier(t, pods, memory.NewNSE(), time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		s.Reap(ctx)
	}()
	defer func() { cancel(); <-reaped }()

	mine := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "mine", Labels: map[string]string{supplier.ManagedBy: "nse-supplier-k8s"}},
		Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "x"}}},
	}
	other := mine.DeepCopy()
	other.Name, other.Labels = "other", nil
	for _, p := range []*corev1.Pod{mine, other} {
		made, err := pods.Create(ctx, p, metav1.CreateOptions{})
		require.NoError(t, err)
		made.Status.Phase = corev1.PodSucceeded
		_, err = pods.UpdateStatus(ctx, made, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		_, err := pods.Get(ctx, "mine", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 10*time.Second, 10*time.Millisecond, "the pod it made was deleted once it ended")
	_, err := pods.Get(ctx, "other", metav1.GetOptions{})
	require.NoError(t, err, "a pod it did not make stays")
}
