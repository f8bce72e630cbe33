// Package inject is the admission side of the webhook: for one AdmissionReview of a pod, or of a
// workload whose pod template is annotated with client URLs, it answers with a JSON patch that
// gives the pod vwire's client, or refuses an annotation the client could not use.
//
// Why a webhook at all: a workload's author writes one annotation,
// networkservicemesh.io: kernel://icmp-responder/nsm-1, and the pod gets the containers, the
// socket volume and the environment a client needs, as NSM's webhook does for NSM's users.
//
// What a pod gets (Config decides the images and extras):
//   - init containers from Config.InitImages, run to completion first;
//   - the client, one native sidecar per Config.Images (an init container with restartPolicy
//     Always): it starts before the pod's own init containers and runs for the pod's life,
//     keeping the vWires;
//   - "<client>-wait", the first image run as `cmd-nsc wait`, which ends once every interface
//     of the annotation exists and is up, so the pod's own containers start with their vWires;
//   - the volumes nsm-socket (the nsmgr's socket, hostPath /var/lib/networkservicemesh) and
//     spire-agent-socket (the SPIRE agent's, /run/spire/sockets), or, in a namespace whose Pod
//     Security level is not privileged, NSM's CSI drivers for both;
//   - the environment: Config.Env, SPIFFE_ENDPOINT_SOCKET, POD_NAME (downward API), the URLs
//     (Config.ServicesEnv, NSM_NETWORK_SERVICES) and NSM_NAME (the pod's name);
//   - when the annotation is the pod's own (or its template's), the volume nsm-network-services,
//     the annotation as a file (downward API) that the client follows (Config.ServicesEnv with
//     FileSuffix, NSM_NETWORK_SERVICES_FILE): annotating the running pod anew changes its vWires.
//     An annotation taken from the workload or the namespace is not the pod's, and is not followed;
//     the pod keeps the list it was created with;
//   - Config.Labels on the pod.
//
// Guarantees: only CREATE is patched. An object without the annotation gets no patch at all,
// and so does a pod that already has the client (a pod made from an injected template). A pod
// without the annotation takes its namespace's. Every refusal (allowed: false) names the
// annotation or the container or volume in the way, and says what to change. Patches only add:
// the pod's own containers, volumes and labels are left as they are, so a second mutating
// webhook's changes survive.
package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	"vwire.dev/api/nsurl"

	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/log"
)

// The volumes a client mounts, with NSM's names and paths.
const (
	SocketVolume = "nsm-socket"
	SocketDir    = "/var/lib/networkservicemesh"
	SpireVolume  = "spire-agent-socket"
	SpireDir     = "/run/spire/sockets"
)

// The pod's own annotation, as a file the kubelet keeps up to date (a downward-API volume): the
// client follows it (NSM_NETWORK_SERVICES_FILE), so that annotating a running pod anew connects
// the services added and closes those removed.
const (
	ServicesVolume = "nsm-network-services"
	ServicesDir    = "/run/vwire"
	ServicesFile   = "network-services"
	// FileSuffix makes, from Config.ServicesEnv, the variable that names the file:
	// NSM_NETWORK_SERVICES_FILE.
	FileSuffix = "_FILE"
)

// WaitSuffix makes the name of the container that waits for the vWires from the client's.
const WaitSuffix = "-wait"

// ReservedEnv are the variables Review sets on every injected container besides
// Config.ServicesEnv; Config.Env must not name them.
var ReservedEnv = []string{"SPIFFE_ENDPOINT_SOCKET", "POD_NAME", "NSM_NAME"}

// MaxReviewBytes bounds the body of a review: the API server's own limit for an object is 3 MiB,
// and a review carries the object once (twice for UPDATE).
const MaxReviewBytes = 8 << 20

// enforceLabel holds a namespace's Pod Security level: privileged (or none), baseline, restricted.
const enforceLabel = "pod-security.kubernetes.io/enforce"

// Config says what to inject.
type Config struct {
	Annotation  string            // names the client URLs: networkservicemesh.io
	ServicesEnv string            // the variable the client reads the URLs from: NSM_NETWORK_SERVICES
	InitImages  []string          // plain init containers, before the client
	Images      []string          // the client (first) and other sidecars; at least one
	Env         []corev1.EnvVar   // more environment for every injected container
	Labels      map[string]string // added to the pod's labels
	Resources   corev1.ResourceRequirements
	// Namespace looks up a namespace, for its annotation and its Pod Security level; nil when
	// there is no API server to ask (then every namespace is privileged and has no annotation).
	Namespace func(ctx context.Context, name string) (*corev1.Namespace, error)
}

// ContainerName is the name of the container an image runs in: the image's last path segment
// without tag or digest (ghcr.io/vwire/cmd-nsc:v1 runs as cmd-nsc), as NSM names them.
func ContainerName(image string) string {
	name := image[strings.LastIndex(image, "/")+1:]
	name, _, _ = strings.Cut(name, "@")
	name, _, _ = strings.Cut(name, ":")
	return name
}

var codecs = func() serializer.CodecFactory {
	scheme := runtime.NewScheme()
	if err := admissionv1.AddToScheme(scheme); err != nil {
		panic(err) // only a broken k8s.io/api could fail here
	}
	return serializer.NewCodecFactory(scheme)
}()

// ServeHTTP answers one AdmissionReview (admission.k8s.io/v1) posted by the API server.
func (c *Config) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "inject: POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxReviewBytes))
	if err != nil {
		http.Error(w, fmt.Sprintf("inject: read the review (limit %d bytes): %v", MaxReviewBytes, err), http.StatusBadRequest)
		return
	}
	review := &admissionv1.AdmissionReview{}
	if _, _, err := codecs.UniversalDeserializer().Decode(body, nil, review); err != nil {
		http.Error(w, fmt.Sprintf("inject: want an admission.k8s.io/v1 AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	if review.Request == nil {
		http.Error(w, "inject: the AdmissionReview has no request", http.StatusBadRequest)
		return
	}
	out := &admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Response: c.Review(r.Context(), review.Request),
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(out); err != nil {
		log.FromContext(r.Context()).Warn("could not send the admission response", "uid", review.Request.UID, "error", err)
	}
}

// Review answers one admission request.
func (c *Config) Review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Operation != admissionv1.Create {
		return resp
	}
	patch, err := c.patch(ctx, req)
	logger := log.FromContext(ctx).With("kind", req.Kind.Kind, "namespace", req.Namespace, "name", req.Name)
	switch {
	case err != nil:
		logger.Info("refused", "reason", err)
		resp.Allowed = false
		resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusBadRequest,
			Reason: metav1.StatusReasonBadRequest, Message: err.Error()}
	case patch != nil:
		logger.Info("injected the client")
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	return resp
}

// Rules are the objects the API server sends to the webhook: the kinds decode knows, at
// creation, the only time Review patches. (NSM's webhook also asks for UPDATE, and lets it pass.)
var Rules = []admissionregv1.RuleWithOperations{
	{Operations: []admissionregv1.OperationType{admissionregv1.Create},
		Rule: admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}},
	{Operations: []admissionregv1.OperationType{admissionregv1.Create},
		Rule: admissionregv1.Rule{APIGroups: []string{"apps"}, APIVersions: []string{"v1"}, Resources: []string{"deployments", "statefulsets", "daemonsets", "replicasets"}}},
}

// target is the part of an admitted object that gets the client.
type target struct {
	kind   string             // for messages: "pod", "pod template"
	meta   *metav1.ObjectMeta // the pod's, or the template's
	owner  *metav1.ObjectMeta // the workload's own; nil for a pod
	spec   *corev1.PodSpec
	prefix string // JSON pointer to the parent of meta and spec
}

// decode returns the object's target, or nil for an object the webhook leaves alone.
func decode(req *admissionv1.AdmissionRequest) (*target, error) {
	var obj any
	var t *target
	template := func(owner *metav1.ObjectMeta, tmpl *corev1.PodTemplateSpec) *target {
		return &target{kind: "pod template", meta: &tmpl.ObjectMeta, owner: owner, spec: &tmpl.Spec, prefix: "/spec/template"}
	}
	switch (schema.GroupKind{Group: req.Kind.Group, Kind: req.Kind.Kind}) {
	case schema.GroupKind{Kind: "Pod"}:
		o := &corev1.Pod{}
		obj, t = o, &target{kind: "pod", meta: &o.ObjectMeta, spec: &o.Spec}
	case schema.GroupKind{Group: "apps", Kind: "Deployment"}:
		o := &appsv1.Deployment{}
		obj, t = o, template(&o.ObjectMeta, &o.Spec.Template)
	case schema.GroupKind{Group: "apps", Kind: "StatefulSet"}:
		o := &appsv1.StatefulSet{}
		obj, t = o, template(&o.ObjectMeta, &o.Spec.Template)
	case schema.GroupKind{Group: "apps", Kind: "DaemonSet"}:
		o := &appsv1.DaemonSet{}
		obj, t = o, template(&o.ObjectMeta, &o.Spec.Template)
	case schema.GroupKind{Group: "apps", Kind: "ReplicaSet"}:
		o := &appsv1.ReplicaSet{}
		obj, t = o, template(&o.ObjectMeta, &o.Spec.Template)
	default:
		return nil, nil
	}
	if err := json.Unmarshal(req.Object.Raw, obj); err != nil {
		return nil, fmt.Errorf("inject: decode the %s: %w", req.Kind.Kind, err)
	}
	if t.owner != nil && slices.ContainsFunc(t.owner.OwnerReferences, func(o metav1.OwnerReference) bool { return o.Kind == "Deployment" }) {
		// The Deployment's template was injected already. Changing its ReplicaSet's would make the
		// two differ, and the Deployment controller would make new ReplicaSets without end.
		return nil, nil
	}
	return t, nil
}

// patch returns the JSON patch for req, nil when there is nothing to do.
func (c *Config) patch(ctx context.Context, req *admissionv1.AdmissionRequest) ([]byte, error) {
	t, err := decode(req)
	if t == nil || err != nil {
		return nil, err
	}
	var ns *metav1.ObjectMeta // looked up when needed, once
	services, found := t.meta.Annotations[c.Annotation]
	follow := found // the pod's own annotation: the kubelet can show it to the client as a file
	where := t.kind
	if !found && t.owner != nil {
		// NSM's place for a workload: its own annotations.
		services, found = t.owner.Annotations[c.Annotation]
		where = strings.ToLower(req.Kind.Kind)
	}
	if !found && t.owner == nil {
		ns = c.namespace(ctx, req.Namespace)
		services, found = ns.Annotations[c.Annotation]
		where = fmt.Sprintf("namespace %q", req.Namespace)
	}
	if !found {
		return nil, nil
	}
	if err := checkServices(services); err != nil {
		return nil, fmt.Errorf("annotation %q of the %s: %q: %w", c.Annotation, where, services, err)
	}

	ours := c.containers(services, follow)
	if injected, err := c.present(t.spec, ours); injected || err != nil {
		return nil, err
	}
	if ns == nil {
		ns = c.namespace(ctx, req.Namespace)
	}
	level := ns.Labels[enforceLabel]
	restricted := level == "restricted"
	want := volumes(level == "" || level == "privileged")
	if follow {
		want = append(want, c.servicesVolume())
	}
	newVols, err := newVolumes(t.spec.Volumes, want)
	if err != nil {
		return nil, err
	}
	for i := range ours {
		ours[i].Resources = *c.Resources.DeepCopy()
		if restricted { // what the restricted level asks of every container
			ours[i].SecurityContext = &corev1.SecurityContext{
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				AllowPrivilegeEscalation: new(false),
			}
		}
	}

	var ops []operation
	ops = prepend(ops, t.prefix+"/spec/initContainers", len(t.spec.InitContainers), ours)
	ops = appendAll(ops, t.prefix+"/spec/volumes", len(t.spec.Volumes), newVols)
	ops = c.addLabels(ops, t.prefix+"/metadata/labels", t.meta.Labels)
	return json.Marshal(ops)
}

// namespace returns the metadata of the namespace called name, empty when it cannot be had: the
// pod is then treated as in a privileged namespace without the annotation, as NSM's webhook does.
func (c *Config) namespace(ctx context.Context, name string) *metav1.ObjectMeta {
	if c.Namespace == nil {
		return &metav1.ObjectMeta{}
	}
	ns, err := c.Namespace(ctx, name)
	if err != nil {
		log.FromContext(ctx).Warn("could not read the namespace; taking it as privileged, without the annotation", "namespace", name, "error", err)
		return &metav1.ObjectMeta{}
	}
	return &ns.ObjectMeta
}

// checkServices checks the annotation's value as the client will read it: a comma-separated
// list of client URLs (vwire.dev/api/nsurl), at least one.
func checkServices(value string) error {
	n := 0
	err := envconfig.DecodeList(value, func(item string) error {
		n++
		_, err := nsurl.Parse(item)
		return err
	})
	if err == nil && n == 0 {
		err = errors.New("no client URL; give at least one, e.g. kernel://icmp-responder/nsm-1")
	}
	return err
}

// containers returns the init containers to inject, in order; with follow, they read the
// services from the annotation's file.
func (c *Config) containers(services string, follow bool) []corev1.Container {
	env := append(slices.Clone(c.Env),
		corev1.EnvVar{Name: "SPIFFE_ENDPOINT_SOCKET", Value: "unix://" + SpireDir + "/agent.sock"},
		corev1.EnvVar{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		corev1.EnvVar{Name: c.ServicesEnv, Value: services},
		corev1.EnvVar{Name: "NSM_NAME", Value: "$(POD_NAME)"})
	mounts := []corev1.VolumeMount{
		{Name: SpireVolume, MountPath: SpireDir, ReadOnly: true},
		{Name: SocketVolume, MountPath: SocketDir, ReadOnly: true},
	}
	if follow {
		env = append(env, corev1.EnvVar{Name: c.ServicesEnv + FileSuffix, Value: ServicesDir + "/" + ServicesFile})
		mounts = append(mounts, corev1.VolumeMount{Name: ServicesVolume, MountPath: ServicesDir, ReadOnly: true})
	}
	container := func(image string) corev1.Container {
		return corev1.Container{
			Name: ContainerName(image), Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
			Env: slices.Clone(env), VolumeMounts: slices.Clone(mounts),
		}
	}
	var out []corev1.Container
	for _, image := range c.InitImages {
		out = append(out, container(image))
	}
	for _, image := range c.Images {
		sidecar := container(image)
		sidecar.RestartPolicy = new(corev1.ContainerRestartPolicyAlways)
		out = append(out, sidecar)
	}
	wait := container(c.Images[0])
	wait.Name += WaitSuffix
	wait.Args = []string{"wait"}
	return append(out, wait)
}

// present reports whether spec has the client already; a container of the pod that has the name
// of one of ours is an error, since names are unique in a pod.
func (c *Config) present(spec *corev1.PodSpec, ours []corev1.Container) (bool, error) {
	client := ContainerName(c.Images[0])
	if slices.ContainsFunc(spec.InitContainers, func(have corev1.Container) bool { return have.Name == client }) {
		return true, nil
	}
	for _, have := range slices.Concat(spec.InitContainers, spec.Containers) {
		for _, want := range ours {
			if have.Name == want.Name {
				return false, fmt.Errorf("the pod has a container %q, the name of the one the webhook adds from %s; rename the pod's container", have.Name, want.Image)
			}
		}
	}
	return false, nil
}

// volumes returns the volumes a client mounts: hostPath where the namespace allows it, NSM's
// CSI drivers elsewhere.
func volumes(hostPath bool) []corev1.Volume {
	if !hostPath {
		csi := func(name, driver string) corev1.Volume {
			return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: driver, ReadOnly: new(true)}}}
		}
		return []corev1.Volume{csi(SpireVolume, "csi.spiffe.io"), csi(SocketVolume, "csi.networkservicemesh.io")}
	}
	host := func(name, path string, t corev1.HostPathType) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &t}}}
	}
	return []corev1.Volume{
		// A node without SPIRE still runs clients: they make their identities without it.
		host(SpireVolume, SpireDir, corev1.HostPathDirectoryOrCreate),
		// The nsmgr makes the directory; without it there is no mesh on the node.
		host(SocketVolume, SocketDir, corev1.HostPathDirectory),
	}
}

// servicesVolume is the pod's annotation as the file ServicesFile, which the kubelet rewrites
// when the annotation changes.
func (c *Config) servicesVolume() corev1.Volume {
	return corev1.Volume{Name: ServicesVolume, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
		Items: []corev1.DownwardAPIVolumeFile{{Path: ServicesFile,
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: fmt.Sprintf("metadata.annotations['%s']", c.Annotation)}}},
	}}}
}

// newVolumes returns the volumes of want that have is missing. A volume of have with the name
// of one of want is kept when it is the same, and an error otherwise.
func newVolumes(have, want []corev1.Volume) ([]corev1.Volume, error) {
	var out []corev1.Volume
	for _, w := range want {
		i := slices.IndexFunc(have, func(h corev1.Volume) bool { return h.Name == w.Name })
		switch {
		case i < 0:
			out = append(out, w)
		case !equality.Semantic.DeepEqual(have[i].VolumeSource, w.VolumeSource):
			src, _ := json.Marshal(w.VolumeSource)
			return nil, fmt.Errorf("the pod has a volume %q that is not the client's %s; rename the pod's volume, or make it the same", w.Name, src)
		}
	}
	return out, nil
}

// operation is one JSON patch operation (RFC 6902).
type operation struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// prepend puts items first in the list at path, which has n items.
func prepend[T any](ops []operation, path string, n int, items []T) []operation {
	if n == 0 {
		return append(ops, operation{"add", path, items})
	}
	for i, item := range items {
		ops = append(ops, operation{"add", fmt.Sprintf("%s/%d", path, i), item})
	}
	return ops
}

// appendAll puts items last in the list at path, which has n items.
func appendAll[T any](ops []operation, path string, n int, items []T) []operation {
	if n == 0 {
		if len(items) == 0 {
			return ops
		}
		return append(ops, operation{"add", path, items})
	}
	for _, item := range items {
		ops = append(ops, operation{"add", path + "/-", item})
	}
	return ops
}

// addLabels sets Config.Labels in the map at path, which holds have.
func (c *Config) addLabels(ops []operation, path string, have map[string]string) []operation {
	if len(c.Labels) == 0 {
		return ops
	}
	if have == nil {
		return append(ops, operation{"add", path, c.Labels})
	}
	escape := strings.NewReplacer("~", "~0", "/", "~1") // RFC 6901
	for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
		ops = append(ops, operation{"add", path + "/" + escape.Replace(k), c.Labels[k]})
	}
	return ops
}
