package main

import (
	"bytes"
	"context"
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"vwire.dev/sdk-k8s/pkg/tools/kubetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const ns = "nsm-system"

// nsmgrPod is an nsmgr of the DaemonSet of deployments-k8s/apps/nsmgr, on node.
func nsmgrPod(node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "nsmgr-" + node, Namespace: ns, Labels: map[string]string{"app": "nsmgr"}},
		Spec: corev1.PodSpec{
			NodeName: node,
			Containers: []corev1.Container{{
				Name:            "nsmgr",
				Image:           "ghcr.io/vwire/cmd-nsmgr:dev",
				ImagePullPolicy: corev1.PullIfNotPresent,
				Env: []corev1.EnvVar{
					{Name: "SPIFFE_ENDPOINT_SOCKET", Value: "unix:///run/spire/sockets/agent.sock"},
					{Name: "NSM_LISTEN_ON", Value: "tcp://$(POD_IP):5001, unix:///var/lib/networkservicemesh/nsm.io.sock"},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "spire-agent-socket", MountPath: "/run/spire/sockets", ReadOnly: true},
					{Name: "nsm-socket", MountPath: "/var/lib/networkservicemesh"},
					{Name: "config", MountPath: "/etc/nsm"},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "spire-agent-socket", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/run/spire/sockets"}}},
				{Name: "nsm-socket", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/networkservicemesh"}}},
			},
		},
	}
}

// TestPodOnTheNodesNSMgr runs the plugin's pod life against a real kube-apiserver (no kubelet:
// the test plays the node, ending the container with an exit code).
func TestPodOnTheNodesNSMgr(t *testing.T) {
	api := kubetest.Start(t)
	cs, err := kubernetes.NewForConfig(api.Config)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	o := options{namespace: ns, selector: "app=nsmgr", timeout: time.Minute, args: []string{"connections", "-o", "json"}}

	_, err = start(ctx, cs, o)
	require.ErrorContains(t, err, "is the mesh deployed?")

	for _, node := range []string{"node-a", "node-b"} {
		_, err = cs.CoreV1().Pods(ns).Create(ctx, nsmgrPod(node), metav1.CreateOptions{})
		require.NoError(t, err)
	}
	_, err = start(ctx, cs, o)
	require.ErrorContains(t, err, "nsmgrs run on 2 nodes (node-a, node-b): say which with --node")
	o.node = "node-c"
	_, err = start(ctx, cs, o)
	require.ErrorContains(t, err, "no nsmgr pod (app=nsmgr in nsm-system) on node node-c")

	o.node = "node-b"
	pod, err := start(ctx, cs, o)
	require.NoError(t, err)
	require.Equal(t, "node-b", pod.Spec.NodeName)
	require.Equal(t, "vwctl", pod.Labels[vwctlLabel], "the label deploy/clusterspiffeid.yaml gives vwctl's identity to")
	require.NotContains(t, pod.Labels, "spiffe.io/spiffe-id", "no pod-named identity besides vwctl's")
	c := pod.Spec.Containers[0]
	require.Equal(t, "ghcr.io/vwire/cmd-vwctl:dev", c.Image, "vwctl's image of the nsmgr's release")
	require.Equal(t, []string{"/bin/cmd-vwctl"}, c.Command)
	require.Equal(t, o.args, c.Args)
	require.Equal(t, []corev1.EnvVar{
		{Name: "SPIFFE_ENDPOINT_SOCKET", Value: "unix:///run/spire/sockets/agent.sock"},
		{Name: "VWCTL_NSMGR", Value: "unix:///var/lib/networkservicemesh/nsm.io.sock"},
		{Name: "NSM_LOG_LEVEL", Value: "ERROR"},
	}, c.Env)
	require.Equal(t, []corev1.VolumeMount{
		{Name: "spire-agent-socket", MountPath: "/run/spire/sockets", ReadOnly: true},
		{Name: "nsm-socket", MountPath: "/var/lib/networkservicemesh", ReadOnly: true},
	}, c.VolumeMounts, "only the sockets' folders, read-only; not the nsmgr's other mounts")
	require.Equal(t, []string{"spire-agent-socket", "nsm-socket"}, volumeNames(pod.Spec.Volumes))
	require.False(t, *pod.Spec.AutomountServiceAccountToken, "no API token")
	require.False(t, *c.SecurityContext.Privileged, "only check runs privileged")
	require.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
	require.Equal(t, []corev1.Capability{"ALL"}, c.SecurityContext.Capabilities.Drop)
	require.False(t, pod.Spec.HostPID)

	// The node ends vwctl with exit code 1 (a broken path, say): wait returns it.
	updated := make(chan error, 1)
	go func() {
		p := pod.DeepCopy()
		p.Status.Phase = corev1.PodFailed
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "vwctl", Image: c.Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}}}
		_, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		updated <- err
	}()
	code, err := wait(ctx, cs, pod)
	require.NoError(t, <-updated)
	require.NoError(t, err)
	require.Equal(t, 1, code)

	remove(cs, pod)
	_, err = cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	require.Error(t, err, "the pod is gone")

	// check enters clients' namespaces: privileged, with the host's processes.
	o.args = []string{"check"}
	pod, err = start(ctx, cs, o)
	require.NoError(t, err)
	require.True(t, *pod.Spec.Containers[0].SecurityContext.Privileged)
	require.True(t, pod.Spec.HostPID)
	remove(cs, pod)

	// A pod that never ends is reported with its phase and what to run.
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	pod, err = start(ctx, cs, o)
	require.NoError(t, err)
	_, err = wait(short, cs, pod)
	require.ErrorContains(t, err, "did not end in time (phase Pending)")
	require.ErrorContains(t, err, "kubectl describe pod -n nsm-system "+pod.Name)
	remove(cs, pod)
}

func TestSplit(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.String("node", "", "")
	fs.Duration("timeout", 0, "")
	own, rest := split(fs, []string{"--node", "n1", "path", "ID", "-o", "json", "-timeout=1m", "-h"})
	require.Equal(t, []string{"--node", "n1", "-timeout=1m", "-h"}, own)
	require.Equal(t, []string{"path", "ID", "-o", "json"}, rest)
}

func TestUsage(t *testing.T) {
	var out, errs bytes.Buffer
	require.Equal(t, 2, run(context.Background(), nil, &out, &errs))
	require.Contains(t, errs.String(), "no vwctl command")
	errs.Reset()
	require.Equal(t, 1, run(context.Background(), []string{"-kubeconfig", "/nonexistent/kubeconfig", "connections"}, &out, &errs))
	require.Contains(t, errs.String(), "set --kubeconfig or KUBECONFIG")
}

func volumeNames(volumes []corev1.Volume) []string {
	var names []string
	for _, v := range volumes {
		names = append(names, v.Name)
	}
	return names
}
