// Package supplier starts the endpoint a client lacks: a pod, made from a template, on the
// client's node. It is the Start of the sdk's spawn element (sdk/pkg/networkservice/common/spawn)
// in cmd-nse-supplier-k8s, and it removes the pods it made once they end (an endpoint started
// this way retires when idle, package onidle, and its pod then ends).
//
// Why a pod per node and service with a fixed name: the name (the template's, or PodName) is
// the same every time, so a second client on the node, or a restarted supplier, finds the pod
// that is there instead of making another; Kubernetes refuses a second pod of one name.
//
// Guarantees:
//   - Start returns nil only once an endpoint named after the pod is registered for the service
//     (the endpoint's NSM_NAME comes from metadata.name, as in NSM's templates): a client asking
//     again then finds it;
//   - it returns an error naming the pod and why as soon as the pod fails (phase Failed, ended
//     before registering, an image that cannot be pulled, a container that cannot start), or
//     when NSM_START_TIMEOUT passes; it then deletes the pod, so the next request starts clean;
//   - a pod of the name that has ended is deleted and made anew; one on another node is an
//     error (the template's name must depend on the node, which ParseTemplate checks);
//   - Reap deletes every pod with the supplier's label once it has ended, also those ended
//     before the supplier started.
//
// It needs create, get, watch and delete on pods in its namespace, and nothing else.
package supplier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	regnext "vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/log"
)

// ManagedBy is the label the supplier puts on its pods, with the value "nse-supplier-k8s":
// Reap deletes the pods that carry it once they end.
const ManagedBy = "app.kubernetes.io/managed-by"

const managedByValue = "nse-supplier-k8s"

// cleanupTimeout bounds a deletion made after the caller's context is spent.
const cleanupTimeout = 10 * time.Second

// Supplier makes the pods of one template in one namespace.
type Supplier struct {
	pods      typedcorev1.PodInterface
	namespace string
	tmpl      *Template
	nse       regnext.NSE
	timeout   time.Duration
}

// New returns a supplier that makes pods from tmpl with pods (a namespace's), and waits, at
// most timeout, for their endpoints to show up in nse (the registry, or the nsmgr in front of
// it).
func New(pods typedcorev1.PodInterface, namespace string, tmpl *Template, nse regnext.NSE, timeout time.Duration) *Supplier {
	if pods == nil || tmpl == nil || nse == nil {
		panic("supplier.New: pods, tmpl and nse are required")
	}
	return &Supplier{pods: pods, namespace: namespace, tmpl: tmpl, nse: nse, timeout: timeout}
}

// Start makes, or finds, the pod of service for node and returns once its endpoint is
// registered; it is a spawn.Start.
func (s *Supplier) Start(ctx context.Context, node, service string) error {
	pod, err := s.tmpl.Pod(service, node)
	if err != nil {
		return err
	}
	pod.Namespace = s.namespace
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[ManagedBy] = managedByValue

	ctx, cancel := context.WithTimeoutCause(ctx, s.timeout, errStartTimeout)
	defer cancel()
	running, err := s.ensure(ctx, pod)
	if err != nil {
		return err
	}
	if err := s.await(ctx, running, service); err != nil {
		if ctx.Err() == nil || context.Cause(ctx) == errStartTimeout {
			s.remove(ctx, running)
		} // else the caller gave up: the pod stays for the next request
		return err
	}
	log.FromContext(ctx).Info("endpoint registered", "pod", running.Name, "node", node, "service", service)
	return nil
}

// errStartTimeout is the cause of a start that took longer than the supplier allows.
var errStartTimeout = errors.New("NSM_START_TIMEOUT passed")

// ensure creates pod, or returns the pod of its name on its node that has not ended.
func (s *Supplier) ensure(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	logger := log.FromContext(ctx)
	where := fmt.Sprintf("pod %s/%s for node %s", s.namespace, pod.Name, pod.Spec.NodeName)
	// A pod of the name that ended is deleted and made again, once.
	for range 2 {
		made, err := s.pods.Create(ctx, pod, metav1.CreateOptions{})
		if err == nil {
			logger.Info("created pod", "pod", made.Name, "node", made.Spec.NodeName)
			return made, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create %s: %w", where, err)
		}
		have, err := s.pods.Get(ctx, pod.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			continue // deleted meanwhile
		case err != nil:
			return nil, fmt.Errorf("get %s: %w", where, err)
		case have.Spec.NodeName != pod.Spec.NodeName:
			return nil, fmt.Errorf("%s: a pod of that name runs on node %s; the template's metadata.name must depend on the node", where, have.Spec.NodeName)
		case have.DeletionTimestamp != nil:
			return nil, fmt.Errorf("%s: the pod of that name is being deleted; a request after it is gone makes it anew", where)
		case ended(have):
			logger.Info("deleting pod that ended, to make it anew", "pod", have.Name, "phase", have.Status.Phase)
			if err := s.delete(ctx, have); err != nil {
				return nil, fmt.Errorf("delete ended %s: %w", where, err)
			}
			continue
		}
		logger.Info("found pod", "pod", have.Name, "node", have.Spec.NodeName, "phase", have.Status.Phase)
		return have, nil
	}
	return nil, fmt.Errorf("create %s: it keeps coming back; is another supplier making it?", where)
}

// errRegistered ends the registry watch when the endpoint shows up.
var errRegistered = errors.New("registered")

// await waits until the endpoint of pod is registered for service, the pod fails, or ctx ends.
func (s *Supplier) await(ctx context.Context, pod *corev1.Pod, service string) error {
	if why := failure(pod); why != "" {
		return fmt.Errorf("pod %s/%s on node %s %s", s.namespace, pod.Name, pod.Spec.NodeName, why)
	}
	watching, cancel := context.WithCancel(ctx)
	done := make(chan error, 2)
	var wg sync.WaitGroup
	name := pod.Name // watchPod writes pod
	wg.Go(func() { done <- s.registered(watching, name, service) })
	wg.Go(func() { done <- s.watchPod(watching, pod) })
	err := <-done
	cancel()
	wg.Wait() // watchPod no longer writes pod
	switch {
	case err == nil || ctx.Err() == nil:
		return err
	case context.Cause(ctx) != errStartTimeout:
		return fmt.Errorf("pod %s/%s on node %s: the request ended before its endpoint registered; the pod stays for the next request: %w",
			s.namespace, pod.Name, pod.Spec.NodeName, ctx.Err())
	default:
		return fmt.Errorf("no endpoint %s of %s registered within NSM_START_TIMEOUT=%s: pod %s/%s on node %s is %s",
			pod.Name, service, s.timeout, s.namespace, pod.Name, pod.Spec.NodeName, state(pod))
	}
}

// registered returns nil once an endpoint named name is registered for service.
func (s *Supplier) registered(ctx context.Context, name, service string) error {
	q := &regnext.Query[*registry.NetworkServiceEndpoint]{
		Record: &registry.NetworkServiceEndpoint{Name: name, NetworkServiceNames: []string{service}},
		Watch:  true,
	}
	err := s.nse.Find(ctx, q, func(ev *regnext.Event[*registry.NetworkServiceEndpoint]) error {
		if ev.Deleted {
			return nil
		}
		return errRegistered
	})
	switch {
	case errors.Is(err, errRegistered):
		return nil
	case err == nil:
		err = errors.New("the watch ended")
	}
	return fmt.Errorf("watch the registry for endpoint %s of %s: %w", name, service, err)
}

// watchPod returns an error once pod fails, goes away, or ctx ends.
func (s *Supplier) watchPod(ctx context.Context, pod *corev1.Pod) error {
	w, err := s.pods.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + pod.Name, ResourceVersion: pod.ResourceVersion})
	if err != nil {
		return fmt.Errorf("watch pod %s/%s: %w", s.namespace, pod.Name, err)
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		p, ok := ev.Object.(*corev1.Pod)
		switch {
		case !ok:
			continue // a watch error: the channel closes next
		case ev.Type == watch.Deleted:
			return fmt.Errorf("pod %s/%s on node %s was deleted before its endpoint registered", s.namespace, p.Name, p.Spec.NodeName)
		}
		*pod = *p // for the message of a timeout
		if why := failure(p); why != "" {
			return fmt.Errorf("pod %s/%s on node %s %s", s.namespace, p.Name, p.Spec.NodeName, why)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("watch pod %s/%s: the API server ended the watch", s.namespace, pod.Name)
}

// state describes pod for a message: phase, and each container that is not running.
func state(pod *corev1.Pod) string {
	phase := string(pod.Status.Phase)
	if phase == "" {
		phase = string(corev1.PodPending)
	}
	parts := []string{phase}
	for _, c := range pod.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil {
			parts = append(parts, fmt.Sprintf("container %s waiting: %s %s", c.Name, w.Reason, w.Message))
		}
	}
	if len(pod.Status.ContainerStatuses) == 0 {
		parts = append(parts, "no kubelet has reported on it: is node "+pod.Spec.NodeName+" in the cluster and ready?")
	}
	return strings.Join(parts, "; ")
}

// cannotStart are the reasons of a waiting container that waiting does not fix.
var cannotStart = []string{"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
	"CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}

// failure says why pod will not bring its endpoint, or "".
func failure(pod *corev1.Pod) string {
	switch pod.Status.Phase {
	case corev1.PodFailed:
		return fmt.Sprintf("failed: %s %s%s", pod.Status.Reason, pod.Status.Message, terminated(pod))
	case corev1.PodSucceeded:
		return "ended before its endpoint registered" + terminated(pod)
	}
	for _, c := range pod.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil && slices.Contains(cannotStart, w.Reason) {
			return fmt.Sprintf("cannot start container %s: %s: %s", c.Name, w.Reason, w.Message)
		}
	}
	return ""
}

// terminated lists the containers that ended, with their exit codes and reasons.
func terminated(pod *corev1.Pod) string {
	var b strings.Builder
	for _, c := range pod.Status.ContainerStatuses {
		if t := c.State.Terminated; t != nil {
			fmt.Fprintf(&b, "; container %s exited %d (%s) %s", c.Name, t.ExitCode, t.Reason, t.Message)
		}
	}
	return b.String()
}

func ended(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// delete deletes pod, if it is still the same object.
func (s *Supplier) delete(ctx context.Context, pod *corev1.Pod) error {
	err := s.pods.Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone, or another pod of the name now
	}
	return err
}

// remove deletes a pod that did not bring its endpoint, with a deadline of its own.
func (s *Supplier) remove(ctx context.Context, pod *corev1.Pod) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := s.delete(ctx, pod); err != nil {
		log.FromContext(ctx).Warn("could not delete the pod that failed; delete it by hand", "pod", pod.Name, "error", err)
		return
	}
	log.FromContext(ctx).Info("deleted the pod that did not bring its endpoint", "pod", pod.Name)
}

// rewatchAfter is how long Reap waits after the API server refused a watch.
const rewatchAfter = time.Second

// Reap deletes the pods the supplier made once they end, until ctx ends.
func (s *Supplier) Reap(ctx context.Context) {
	logger := log.FromContext(ctx)
	selector := metav1.ListOptions{LabelSelector: ManagedBy + "=" + managedByValue}
	for ctx.Err() == nil {
		w, err := s.pods.Watch(ctx, selector)
		if err != nil {
			logger.Warn("watch the pods made here failed; ended ones stay until the watch works", "namespace", s.namespace, "error", err)
			timer := time.NewTimer(rewatchAfter)
			select {
			case <-ctx.Done():
			case <-timer.C:
			}
			timer.Stop()
			continue
		}
		for ev := range w.ResultChan() {
			if pod, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted && ended(pod) && pod.DeletionTimestamp == nil {
				if err := s.delete(ctx, pod); err != nil && ctx.Err() == nil {
					logger.Warn("delete a pod that ended", "pod", pod.Name, "error", err)
					continue
				}
				logger.Info("deleted pod that ended", "pod", pod.Name, "phase", pod.Status.Phase)
			}
		}
		w.Stop()
	}
}
