// Command kubectl-vwire is vwctl as a kubectl plugin: `kubectl vwire [flags] COMMAND [ARG]`
// runs `vwctl COMMAND [ARG]` on a node of the cluster and prints what it says.
//
// It runs vwctl in a pod of its own (vwctl's image, the tag of the node's nsmgr's) on the node
// of the nsmgr it asks (-node; with one node, that one), in the nsmgr's namespace, with the
// nsmgr's volumes (its socket folder and the SPIRE agent's socket) and SPIFFE_ENDPOINT_SOCKET,
// and VWCTL_NSMGR set to the nsmgr's unix socket from its NSM_LISTEN_ON; then it prints the
// pod's log, exits with vwctl's exit code, and deletes the pod. The pod's identity comes from
// the node's SPIRE agent: deploy/clusterspiffeid.yaml gives every such pod the SPIFFE ID
// spiffe://<trust domain>/vwctl, which the nsmgrs' and forwarders' NSM_MONITOR_OPERATORS name.
// `check` runs privileged with the host's process namespace, to enter clients' network
// namespaces; the other commands run unprivileged.
//
// Why a pod, not a port-forward: the nsmgr's unix socket and the forwarders' sockets (passed by
// descriptor) are reachable only on the node, and vwctl's identity must come from the SPIRE
// agent of that node; a pod gets both with no credential leaving the cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `kubectl vwire: vwctl on a node of the cluster (vwctl -h lists the commands).

usage: kubectl vwire [flags] COMMAND [ARG] [vwctl flags]

flags:
`

// options say where vwctl runs and what it is asked.
type options struct {
	namespace string // the nsmgrs' namespace
	selector  string // the nsmgrs' label selector
	node      string // the node whose nsmgr vwctl asks; "" if the cluster has one nsmgr
	image     string // vwctl's image; "" for the nsmgr's image with cmd-nsmgr replaced by cmd-vwctl
	timeout   time.Duration
	args      []string // vwctl's
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := options{}
	var kubeconfig string
	fs := flag.NewFlagSet("kubectl-vwire", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&kubeconfig, "kubeconfig", "", "the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&o.namespace, "namespace", "nsm-system", "the namespace of the nsmgrs")
	fs.StringVar(&o.selector, "selector", "app=nsmgr", "the label selector of the nsmgr pods")
	fs.StringVar(&o.node, "node", "", "the node whose nsmgr vwctl asks (needed when there are several)")
	fs.StringVar(&o.image, "image", "", "vwctl's image (default: the nsmgr's image, cmd-nsmgr replaced by cmd-vwctl)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long vwctl's pod may take, from its creation to its end")
	own, rest := split(fs, args)
	if err := fs.Parse(own); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "kubectl-vwire: no vwctl command; use connections, path ID, services, endpoints or check")
		return 2
	}
	o.args = rest

	loading := clientcmd.NewDefaultClientConfigLoadingRules()
	loading.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loading, nil).ClientConfig()
	if err != nil {
		fmt.Fprintf(stderr, "kubectl-vwire: no cluster to talk to: %v (set --kubeconfig or KUBECONFIG)\n", err)
		return 1
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "kubectl-vwire: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	pod, err := start(ctx, cs, o)
	if err != nil {
		fmt.Fprintf(stderr, "kubectl-vwire: %v\n", err)
		return 1
	}
	defer remove(cs, pod)
	code, err := wait(ctx, cs, pod)
	if err != nil {
		fmt.Fprintf(stderr, "kubectl-vwire: %v\n", err)
		return 1
	}
	if err := logs(ctx, cs, pod, stdout); err != nil {
		fmt.Fprintf(stderr, "kubectl-vwire: %v\n", err)
		return 1
	}
	return code
}

// split separates the plugin's own flags (those fs defines, and -h) from vwctl's command, its
// argument and its flags, which may come in any order: kubectl vwire --node n path ID -o json.
func split(fs *flag.FlagSet, args []string) (own, rest []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		switch {
		case !strings.HasPrefix(a, "-") || a == "-" || a == "--":
			rest = append(rest, a)
		case name == "h" || name == "help":
			own = append(own, a)
		case f == nil:
			rest = append(rest, a)
		case hasValue || i+1 == len(args):
			own = append(own, a)
		default: // every flag of the plugin takes a value
			own = append(own, a, args[i+1])
			i++
		}
	}
	return own, rest
}

// nsmgrOf returns the nsmgr pod vwctl asks: the one on o.node, or the only one.
func nsmgrOf(ctx context.Context, cs kubernetes.Interface, o options) (*corev1.Pod, error) {
	list := metav1.ListOptions{LabelSelector: o.selector}
	if o.node != "" {
		list.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", o.node).String()
	}
	pods, err := cs.CoreV1().Pods(o.namespace).List(ctx, list)
	if err != nil {
		return nil, fmt.Errorf("list the nsmgr pods (%s in %s): %w", o.selector, o.namespace, err)
	}
	var running []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Spec.NodeName != "" {
			running = append(running, p)
		}
	}
	switch {
	case len(running) == 0 && o.node != "":
		return nil, fmt.Errorf("no nsmgr pod (%s in %s) on node %s: check the node's name (kubectl get nodes) and --namespace, --selector", o.selector, o.namespace, o.node)
	case len(running) == 0:
		return nil, fmt.Errorf("no nsmgr pod (%s in %s): is the mesh deployed? set --namespace and --selector to where its nsmgrs are", o.selector, o.namespace)
	case len(running) > 1:
		var nodes []string
		for _, p := range running {
			nodes = append(nodes, p.Spec.NodeName)
		}
		return nil, fmt.Errorf("nsmgrs run on %d nodes (%s): say which with --node", len(running), strings.Join(nodes, ", "))
	}
	return &running[0], nil
}

// vwctlLabel marks vwctl's pods: deploy/clusterspiffeid.yaml gives them vwctl's SPIFFE ID.
const vwctlLabel = "app.kubernetes.io/name"

// podFor returns the pod that runs vwctl with args beside nsmgr, on its node.
func podFor(nsmgr *corev1.Pod, image string, args []string, deadline time.Duration) (*corev1.Pod, error) {
	if len(nsmgr.Spec.Containers) == 0 {
		return nil, fmt.Errorf("nsmgr pod %s has no container", nsmgr.Name)
	}
	c := nsmgr.Spec.Containers[0]
	if image == "" {
		if !strings.Contains(c.Image, "cmd-nsmgr") {
			return nil, fmt.Errorf("the nsmgr's image %s is not named cmd-nsmgr, so vwctl's is unknown: set --image", c.Image)
		}
		image = strings.Replace(c.Image, "cmd-nsmgr", "cmd-vwctl", 1)
	}
	env := []corev1.EnvVar{}
	for _, e := range c.Env {
		switch e.Name {
		case "SPIFFE_ENDPOINT_SOCKET":
			env = append(env, e)
		case "NSM_LISTEN_ON":
			for _, u := range strings.Split(e.Value, ",") {
				if u = strings.TrimSpace(u); strings.HasPrefix(u, "unix://") {
					env = append(env, corev1.EnvVar{Name: "VWCTL_NSMGR", Value: u})
					break
				}
			}
		}
	}
	if !hasEnv(env, "VWCTL_NSMGR") {
		env = append(env, corev1.EnvVar{Name: "VWCTL_NSMGR", Value: "unix:///var/lib/networkservicemesh/nsm.io.sock"})
	}
	if !hasEnv(env, "SPIFFE_ENDPOINT_SOCKET") {
		return nil, fmt.Errorf("nsmgr pod %s has no SPIFFE_ENDPOINT_SOCKET: vwctl takes its identity from the same SPIRE agent", nsmgr.Name)
	}
	env = append(env, corev1.EnvVar{Name: "NSM_LOG_LEVEL", Value: "ERROR"}) // the pod's log is stdout and stderr in one: no WARN line in -o json
	volumes, mounts := socketMounts(nsmgr.Spec.Volumes, c.VolumeMounts, env)
	check := len(args) > 0 && args[0] == "check"
	seconds := int64(deadline.Seconds())
	noToken := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "vwctl-",
			Namespace:    nsmgr.Namespace,
			Labels:       map[string]string{vwctlLabel: "vwctl"},
		},
		Spec: corev1.PodSpec{
			NodeName:                     nsmgr.Spec.NodeName,
			RestartPolicy:                corev1.RestartPolicyNever,
			Tolerations:                  nsmgr.Spec.Tolerations,
			ImagePullSecrets:             nsmgr.Spec.ImagePullSecrets,
			Volumes:                      volumes,
			AutomountServiceAccountToken: &noToken, // vwctl asks the mesh, never the API server
			ActiveDeadlineSeconds:        &seconds,
			HostPID:                      check, // clients' network namespaces, by /proc/<pid>/ns/net
			Containers: []corev1.Container{{
				Name:                     "vwctl",
				Image:                    image,
				ImagePullPolicy:          c.ImagePullPolicy,
				Command:                  []string{"/bin/cmd-vwctl"},
				Args:                     args,
				Env:                      env,
				VolumeMounts:             mounts,
				SecurityContext:          securityContext(check),
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
		},
	}
	return pod, nil
}

// socketMounts returns, of the nsmgr's volumes and mounts, those that hold the sockets env names
// (the SPIRE agent's, the nsmgr's), read-only: vwctl needs nothing else of the node.
func socketMounts(volumes []corev1.Volume, mounts []corev1.VolumeMount, env []corev1.EnvVar) ([]corev1.Volume, []corev1.VolumeMount) {
	var keptVolumes []corev1.Volume
	var keptMounts []corev1.VolumeMount
	for _, m := range mounts {
		holds := slices.ContainsFunc(env, func(e corev1.EnvVar) bool {
			path := strings.TrimPrefix(e.Value, "unix://")
			return (e.Name == "SPIFFE_ENDPOINT_SOCKET" || e.Name == "VWCTL_NSMGR") &&
				strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")
		})
		if !holds {
			continue
		}
		m.ReadOnly = true // a socket is dialled on a read-only mount all the same
		keptMounts = append(keptMounts, m)
		if i := slices.IndexFunc(volumes, func(v corev1.Volume) bool { return v.Name == m.Name }); i >= 0 {
			keptVolumes = append(keptVolumes, volumes[i])
		}
	}
	return keptVolumes, keptMounts
}

// securityContext is vwctl's: privileged for check, which enters clients' network namespaces to
// ping; otherwise without any capability.
func securityContext(check bool) *corev1.SecurityContext {
	if check {
		return &corev1.SecurityContext{Privileged: &check}
	}
	no := false
	return &corev1.SecurityContext{
		Privileged:               &no,
		AllowPrivilegeEscalation: &no,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

func hasEnv(env []corev1.EnvVar, name string) bool {
	for _, e := range env {
		if e.Name == name {
			return true
		}
	}
	return false
}

// start creates vwctl's pod beside the nsmgr o names.
func start(ctx context.Context, cs kubernetes.Interface, o options) (*corev1.Pod, error) {
	nsmgr, err := nsmgrOf(ctx, cs, o)
	if err != nil {
		return nil, err
	}
	pod, err := podFor(nsmgr, o.image, o.args, o.timeout)
	if err != nil {
		return nil, err
	}
	created, err := cs.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create vwctl's pod in %s on node %s: %w", pod.Namespace, pod.Spec.NodeName, err)
	}
	return created, nil
}

// wait returns vwctl's exit code once its pod ended.
func wait(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod) (int, error) {
	pods := cs.CoreV1().Pods(pod.Namespace)
	w, err := pods.Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", pod.Name).String(),
		ResourceVersion: pod.ResourceVersion,
	})
	if err != nil {
		return 0, fmt.Errorf("watch vwctl's pod %s: %w", pod.Name, err)
	}
	defer w.Stop()
	last := pod
	for {
		if code, ok := ended(last); ok {
			return code, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("vwctl's pod %s/%s did not end in time (phase %s%s): kubectl describe pod -n %s %s; raise --timeout",
				pod.Namespace, pod.Name, last.Status.Phase, waiting(last), pod.Namespace, pod.Name)
		case ev, open := <-w.ResultChan():
			if !open {
				return 0, fmt.Errorf("the watch of vwctl's pod %s ended", pod.Name)
			}
			if ev.Type == watch.Deleted {
				return 0, fmt.Errorf("vwctl's pod %s was deleted before it ended", pod.Name)
			}
			if p, ok := ev.Object.(*corev1.Pod); ok {
				last = p
			}
		}
	}
}

// ended returns vwctl's exit code once its container terminated.
func ended(p *corev1.Pod) (int, bool) {
	for _, s := range p.Status.ContainerStatuses {
		if t := s.State.Terminated; s.Name == "vwctl" && t != nil {
			return int(t.ExitCode), true
		}
	}
	if p.Status.Phase == corev1.PodFailed { // ended without running vwctl (deadline, eviction)
		return 1, true
	}
	return 0, false
}

// waiting says why the container waits, if it does ("ErrImageNeverPull", ...).
func waiting(p *corev1.Pod) string {
	for _, s := range p.Status.ContainerStatuses {
		if w := s.State.Waiting; w != nil {
			return ", " + w.Reason + ": " + w.Message
		}
	}
	return ""
}

// logs copies vwctl's output (stdout and stderr, as the node kept them) to w.
func logs(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, w io.Writer) error {
	r, err := cs.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "vwctl"}).Stream(ctx)
	if err != nil {
		return fmt.Errorf("read vwctl's output (pod %s): %w", pod.Name, err)
	}
	defer r.Close()
	_, err = io.Copy(w, r)
	return err
}

// remove deletes vwctl's pod, with a deadline of its own: the command's may be spent.
func remove(cs kubernetes.Interface, pod *corev1.Pod) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	zero := int64(0)
	_ = cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
}
