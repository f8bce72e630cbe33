package inject_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"vwire.dev/cmd-admission-webhook-k8s/internal/inject"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	image = "ghcr.io/vwire/cmd-nsc:v1"
	ann   = "networkservicemesh.io"
)

// webhook is the configuration of NSM's deployment (apps/admission-webhook-k8s), with vwire's image.
func webhook() *inject.Config {
	namespaces := map[string]*corev1.Namespace{
		"annotated":  {ObjectMeta: metav1.ObjectMeta{Name: "annotated", Annotations: map[string]string{ann: "kernel://from-namespace/nsm-1"}}},
		"restricted": {ObjectMeta: metav1.ObjectMeta{Name: "restricted", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}},
	}
	return &inject.Config{
		Annotation:  ann,
		ServicesEnv: "NSM_NETWORK_SERVICES",
		Images:      []string{image},
		Env:         []corev1.EnvVar{{Name: "NSM_LOG_LEVEL", Value: "TRACE"}},
		Labels:      map[string]string{"spiffe.io/spiffe-id": "true"},
		Resources: corev1.ResourceRequirements{
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m"), corev1.ResourceMemory: resource.MustParse("80Mi")},
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("40Mi")},
		},
		Namespace: func(_ context.Context, name string) (*corev1.Namespace, error) {
			if ns, ok := namespaces[name]; ok {
				return ns, nil
			}
			return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, name)
		},
	}
}

// client is what a pod should get for services, written out in full; follow: the annotation is
// the pod's own, and the client follows it as a file.
func client(services string, follow bool) []corev1.Container {
	env := []corev1.EnvVar{
		{Name: "NSM_LOG_LEVEL", Value: "TRACE"},
		{Name: "SPIFFE_ENDPOINT_SOCKET", Value: "unix:///run/spire/sockets/agent.sock"},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "NSM_NETWORK_SERVICES", Value: services},
		{Name: "NSM_NAME", Value: "$(POD_NAME)"},
	}
	mounts := []corev1.VolumeMount{
		{Name: "spire-agent-socket", MountPath: "/run/spire/sockets", ReadOnly: true},
		{Name: "nsm-socket", MountPath: "/var/lib/networkservicemesh", ReadOnly: true},
	}
	if follow {
		env = append(env, corev1.EnvVar{Name: "NSM_NETWORK_SERVICES_FILE", Value: "/run/vwire/network-services"})
		mounts = append(mounts, corev1.VolumeMount{Name: "nsm-network-services", MountPath: "/run/vwire", ReadOnly: true})
	}
	res := webhook().Resources
	always := corev1.ContainerRestartPolicyAlways
	return []corev1.Container{
		{Name: "cmd-nsc", Image: image, ImagePullPolicy: corev1.PullIfNotPresent, Env: env, VolumeMounts: mounts, Resources: res, RestartPolicy: &always},
		{Name: "cmd-nsc-wait", Image: image, Args: []string{"wait"}, ImagePullPolicy: corev1.PullIfNotPresent, Env: env, VolumeMounts: mounts, Resources: res},
	}
}

func hostVolumes() []corev1.Volume {
	dir, orCreate := corev1.HostPathDirectory, corev1.HostPathDirectoryOrCreate
	return []corev1.Volume{
		{Name: "spire-agent-socket", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/run/spire/sockets", Type: &orCreate}}},
		{Name: "nsm-socket", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/networkservicemesh", Type: &dir}}},
	}
}

// annotationVolume is the pod's annotation as the file the client follows.
var annotationVolume = corev1.Volume{Name: "nsm-network-services", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
	Items: []corev1.DownwardAPIVolumeFile{{Path: "network-services", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['networkservicemesh.io']"}}},
}}}

// followed is the volumes of a pod whose client follows its annotation.
func followed(vols ...corev1.Volume) []corev1.Volume { return append(vols, annotationVolume) }

var app = corev1.Container{Name: "app", Image: "alpine"}

func pod(annotations map[string]string, spec corev1.PodSpec) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "alpine", Namespace: "ns", Annotations: annotations},
		Spec:       spec,
	}
}

func deployment(own, template map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "alpine", Namespace: "ns", Annotations: own},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "alpine"}, Annotations: template},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{app}},
		}},
	}
}

// review posts the admission of obj to the webhook as the API server does, and returns its
// answer and obj with the patch applied (obj itself without a patch).
func review(t *testing.T, c *inject.Config, op admissionv1.Operation, obj runtime.Object) (*admissionv1.AdmissionResponse, []byte) {
	t.Helper()
	raw, err := json.Marshal(obj)
	require.NoError(t, err)
	gvk := obj.GetObjectKind().GroupVersionKind()
	meta := obj.(metav1.Object)
	in := &admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("uid-" + t.Name()),
			Kind:      metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind},
			Resource:  metav1.GroupVersionResource{Group: gvk.Group, Version: gvk.Version, Resource: strings.ToLower(gvk.Kind) + "s"},
			Namespace: meta.GetNamespace(),
			Name:      meta.GetName(),
			Operation: op,
			Object:    runtime.RawExtension{Raw: raw},
		},
	}
	body, err := json.Marshal(in)
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body)))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	out := &admissionv1.AdmissionReview{}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), out))
	require.Equal(t, "admission.k8s.io/v1", out.APIVersion)
	require.Equal(t, "AdmissionReview", out.Kind)
	require.Equal(t, in.Request.UID, out.Response.UID)
	if out.Response.Patch == nil {
		require.Nil(t, out.Response.PatchType)
		return out.Response, raw
	}
	require.Equal(t, admissionv1.PatchTypeJSONPatch, *out.Response.PatchType)
	patch, err := jsonpatch.DecodePatch(out.Response.Patch)
	require.NoError(t, err)
	patched, err := patch.Apply(raw)
	require.NoError(t, err, "patch %s", out.Response.Patch)
	return out.Response, patched
}

func TestReview(t *testing.T) {
	one := map[string]string{ann: "kernel://icmp-responder/nsm-1"}
	mine := corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	setup := corev1.Container{Name: "setup", Image: "alpine"}
	for _, tc := range []struct {
		name string
		obj  runtime.Object
		want *corev1.PodSpec       // the pod (template) after the patch; nil: no patch
		lbls map[string]string     // its labels after the patch
		at   func(any) *corev1.Pod // where the pod is in the patched object; nil: a Pod
	}{
		{
			name: "annotated pod",
			obj:  pod(one, corev1.PodSpec{Containers: []corev1.Container{app}}),
			want: &corev1.PodSpec{InitContainers: client("kernel://icmp-responder/nsm-1", true), Containers: []corev1.Container{app}, Volumes: followed(hostVolumes()...)},
			lbls: map[string]string{"spiffe.io/spiffe-id": "true"},
		},
		{
			name: "several services, the pod's own init containers, volumes and labels kept after ours",
			obj: func() *corev1.Pod {
				p := pod(map[string]string{ann: "kernel://icmp-responder/nsm-1,kernel://vpn@corp.example/vpn0?app=web"},
					corev1.PodSpec{InitContainers: []corev1.Container{setup}, Containers: []corev1.Container{app}, Volumes: []corev1.Volume{mine}})
				p.Labels = map[string]string{"app": "alpine", "spiffe.io/spiffe-id": "false"}
				return p
			}(),
			want: &corev1.PodSpec{
				InitContainers: append(client("kernel://icmp-responder/nsm-1,kernel://vpn@corp.example/vpn0?app=web", true), setup),
				Containers:     []corev1.Container{app},
				Volumes:        followed(append([]corev1.Volume{mine}, hostVolumes()...)...),
			},
			lbls: map[string]string{"app": "alpine", "spiffe.io/spiffe-id": "true"},
		},
		{
			name: "a pod without the annotation takes its namespace's",
			obj: func() *corev1.Pod {
				p := pod(nil, corev1.PodSpec{Containers: []corev1.Container{app}})
				p.Namespace = "annotated"
				return p
			}(),
			want: &corev1.PodSpec{InitContainers: client("kernel://from-namespace/nsm-1", false), Containers: []corev1.Container{app}, Volumes: hostVolumes()},
			lbls: map[string]string{"spiffe.io/spiffe-id": "true"},
		},
		{
			name: "annotated Deployment template",
			obj:  deployment(nil, one),
			want: &corev1.PodSpec{InitContainers: client("kernel://icmp-responder/nsm-1", true), Containers: []corev1.Container{app}, Volumes: followed(hostVolumes()...)},
			lbls: map[string]string{"app": "alpine", "spiffe.io/spiffe-id": "true"},
			at:   template,
		},
		{
			name: "annotated Deployment (NSM's place): its template gets the client, whose pods do not have the annotation to follow",
			obj:  deployment(one, nil),
			want: &corev1.PodSpec{InitContainers: client("kernel://icmp-responder/nsm-1", false), Containers: []corev1.Container{app}, Volumes: hostVolumes()},
			lbls: map[string]string{"app": "alpine", "spiffe.io/spiffe-id": "true"},
			at:   template,
		},
		{
			name: "a volume of the pod that is the client's is used",
			obj:  pod(one, corev1.PodSpec{Containers: []corev1.Container{app}, Volumes: hostVolumes()[1:]}),
			want: &corev1.PodSpec{InitContainers: client("kernel://icmp-responder/nsm-1", true), Containers: []corev1.Container{app},
				Volumes: followed(hostVolumes()[1], hostVolumes()[0])},
			lbls: map[string]string{"spiffe.io/spiffe-id": "true"},
		},
		{
			name: "restricted namespace: CSI volumes, no privilege",
			obj: func() *corev1.Pod {
				p := pod(one, corev1.PodSpec{Containers: []corev1.Container{app}})
				p.Namespace = "restricted"
				return p
			}(),
			want: func() *corev1.PodSpec {
				ours := client("kernel://icmp-responder/nsm-1", true)
				for i := range ours {
					f := false
					ours[i].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}, AllowPrivilegeEscalation: &f}
				}
				ro := true
				return &corev1.PodSpec{InitContainers: ours, Containers: []corev1.Container{app}, Volumes: followed(
					corev1.Volume{Name: "spire-agent-socket", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "csi.spiffe.io", ReadOnly: &ro}}},
					corev1.Volume{Name: "nsm-socket", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "csi.networkservicemesh.io", ReadOnly: &ro}}},
				)}
			}(),
			lbls: map[string]string{"spiffe.io/spiffe-id": "true"},
		},
		{name: "no annotation", obj: pod(nil, corev1.PodSpec{Containers: []corev1.Container{app}})},
		{name: "Deployment without the annotation", obj: deployment(nil, nil)},
		{
			name: "already injected: a pod made from an injected template",
			obj:  pod(one, corev1.PodSpec{InitContainers: client("kernel://icmp-responder/nsm-1", true), Containers: []corev1.Container{app}, Volumes: followed(hostVolumes()...)}),
		},
		{
			name: "ReplicaSet of a Deployment",
			obj: &appsv1.ReplicaSet{
				TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "ReplicaSet"},
				ObjectMeta: metav1.ObjectMeta{Name: "alpine-1", Namespace: "ns", Annotations: one,
					OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "alpine", UID: "u"}}},
				Spec: appsv1.ReplicaSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{app}}}},
			},
		},
		{
			name: "a kind it does not handle",
			obj:  &corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}, ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns", Annotations: one}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, patched := review(t, webhook(), admissionv1.Create, tc.obj)
			require.True(t, resp.Allowed, "refused: %v", resp.Result)
			if tc.want == nil {
				require.Nil(t, resp.Patch, "%s", resp.Patch)
				return
			}
			require.NotNil(t, resp.Patch)
			at := tc.at
			if at == nil {
				at = func(o any) *corev1.Pod { return o.(*corev1.Pod) }
			}
			after := tc.obj.DeepCopyObject()
			require.NoError(t, json.Unmarshal(patched, after))
			got := at(after)
			require.Equal(t, *tc.want, got.Spec)
			require.Equal(t, tc.lbls, got.Labels)
		})
	}
}

// template is the pod template of a Deployment, as a pod.
func template(o any) *corev1.Pod {
	tmpl := o.(*appsv1.Deployment).Spec.Template
	return &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
}

func TestRefused(t *testing.T) {
	other := corev1.Volume{Name: "nsm-socket", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	for _, tc := range []struct {
		name string
		obj  runtime.Object
		want string
	}{
		{"malformed annotation", pod(map[string]string{ann: "kernel://icmp-responder/nsm-1,kernel:///nsm-2"}, corev1.PodSpec{Containers: []corev1.Container{app}}),
			`annotation "networkservicemesh.io" of the pod: "kernel://icmp-responder/nsm-1,kernel:///nsm-2": item 2 "kernel:///nsm-2": url host: missing network service`},
		{"empty annotation", pod(map[string]string{ann: ""}, corev1.PodSpec{Containers: []corev1.Container{app}}),
			`annotation "networkservicemesh.io" of the pod: "": no client URL; give at least one, e.g. kernel://icmp-responder/nsm-1`},
		{"unknown mechanism in a Deployment template", deployment(nil, map[string]string{ann: "vhost://icmp-responder"}),
			`annotation "networkservicemesh.io" of the pod template: "vhost://icmp-responder": url scheme: `},
		{"malformed annotation of a Deployment", deployment(map[string]string{ann: "kernel://icmp-responder/a-very-long-ifname"}, nil),
			`annotation "networkservicemesh.io" of the deployment: "kernel://icmp-responder/a-very-long-ifname": url path: interface name "a-very-long-ifname" is 18 bytes, limit 15`},
		{"a volume of the client's name and another source", pod(map[string]string{ann: "kernel://icmp-responder"}, corev1.PodSpec{Containers: []corev1.Container{app}, Volumes: []corev1.Volume{other}}),
			`the pod has a volume "nsm-socket" that is not the client's {"hostPath":{"path":"/var/lib/networkservicemesh","type":"Directory"}}; rename the pod's volume, or make it the same`},
		{"a container of the client's name", pod(map[string]string{ann: "kernel://icmp-responder"}, corev1.PodSpec{Containers: []corev1.Container{{Name: "cmd-nsc-wait", Image: "alpine"}}}),
			`the pod has a container "cmd-nsc-wait", the name of the one the webhook adds from ghcr.io/vwire/cmd-nsc:v1; rename the pod's container`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := review(t, webhook(), admissionv1.Create, tc.obj)
			require.False(t, resp.Allowed)
			require.Nil(t, resp.Patch)
			require.Equal(t, int32(http.StatusBadRequest), resp.Result.Code)
			require.True(t, strings.HasPrefix(resp.Result.Message, tc.want), "got %s", resp.Result.Message)
		})
	}
}

func TestUpdateIsLeftAlone(t *testing.T) {
	resp, _ := review(t, webhook(), admissionv1.Update, pod(map[string]string{ann: "kernel://icmp-responder"}, corev1.PodSpec{Containers: []corev1.Container{app}}))
	require.True(t, resp.Allowed)
	require.Nil(t, resp.Patch)
}

func TestBadReviewIsBadRequest(t *testing.T) {
	for _, body := range []string{
		"",
		"{",
		`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"1"}}`,
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`,
	} {
		rec := httptest.NewRecorder()
		webhook().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate", strings.NewReader(body)))
		require.Equal(t, http.StatusBadRequest, rec.Code, body)
		require.True(t, strings.HasPrefix(rec.Body.String(), "inject: "), rec.Body.String())
	}
	rec := httptest.NewRecorder()
	webhook().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate", strings.NewReader(strings.Repeat(" ", inject.MaxReviewBytes+1))))
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.Contains(t, rec.Body.String(), fmt.Sprintf("limit %d bytes", inject.MaxReviewBytes))
}

func TestContainerName(t *testing.T) {
	for image, want := range map[string]string{
		"cmd-nsc":                             "cmd-nsc",
		"ghcr.io/vwire/cmd-nsc:v1":            "cmd-nsc",
		"registry:5000/vwire/cmd-nsc":         "cmd-nsc",
		"ghcr.io/vwire/cmd-nsc@sha256:abcdef": "cmd-nsc",
		"ghcr.io/vwire/cmd-nsc:v1@sha256:abc": "cmd-nsc",
	} {
		require.Equal(t, want, inject.ContainerName(image), image)
	}
}

// FuzzAnnotation: any annotation gets a patch that applies, or a refusal naming the annotation.
func FuzzAnnotation(f *testing.F) {
	for _, s := range []string{"kernel://icmp-responder/nsm-1", "kernel://a,memif://b/x?l=1", ",", "kernel://vpn@corp.example", "%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			t.Skip("an annotation travels as a JSON string: always UTF-8")
		}
		resp, patched := review(t, webhook(), admissionv1.Create, pod(map[string]string{ann: s}, corev1.PodSpec{Containers: []corev1.Container{app}}))
		if !resp.Allowed {
			require.True(t, strings.HasPrefix(resp.Result.Message, `annotation "networkservicemesh.io" of the pod: `), resp.Result.Message)
			return
		}
		got := &corev1.Pod{}
		require.NoError(t, json.Unmarshal(patched, got))
		require.Equal(t, s, got.Spec.InitContainers[0].Env[3].Value)
	})
}
