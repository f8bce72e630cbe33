// Package v1 is NSM's Kubernetes API for its registry: the custom resources NetworkService and
// NetworkServiceEndpoint of group networkservicemesh.io, version v1, and a typed client for them.
//
// The registry stores each network service and endpoint as one of these resources, so that
// NSM's users keep their objects, manifests and tools (kubectl get nse): the group, version,
// kinds, names, scope and JSON of the spec are NSM's. As in NSM, the spec is the registry record
// of NSM's API module itself, encoded as Go's encoding/json writes it (snake_case fields from
// the protobuf tags; a timestamp is {"seconds": ..., "nanos": ...}).
//
// Guarantees callers rely on:
//   - the object's name is the record's name (Record sets it; a record read back gets it from
//     metadata.name when the spec has none, as objects written by hand may);
//   - DeepCopy shares nothing with the original, the spec included;
//   - the manifests that install these resources are generated from these types
//     (pkg/tools/k8s/crd).
package v1

import (
	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"vwire.dev/sdk/pkg/registry/core/next"
)

// Object is a registry record stored as a custom resource; NetworkService and
// NetworkServiceEndpoint name its two kinds.
type Object[R next.Record] struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec R `json:"spec"`
}

// ObjectList is a page of Objects, as List returns them.
type ObjectList[R next.Record] struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []Object[R] `json:"items"`
}

// The kinds, as NSM names them.
type (
	NetworkService             = Object[*registry.NetworkService]
	NetworkServiceList         = ObjectList[*registry.NetworkService]
	NetworkServiceEndpoint     = Object[*registry.NetworkServiceEndpoint]
	NetworkServiceEndpointList = ObjectList[*registry.NetworkServiceEndpoint]
)

// New returns the object of record r in namespace: named as r, its spec a copy of r.
func New[R next.Record](namespace string, r R) *Object[R] {
	return &Object[R]{
		ObjectMeta: metav1.ObjectMeta{Name: r.GetName(), Namespace: namespace},
		Spec:       proto.Clone(r).(R),
	}
}

// Record returns a copy of the object's record, named as the object.
func (o *Object[R]) Record() R {
	r := proto.Clone(o.Spec).(R)
	if !r.ProtoReflect().IsValid() { // an object without spec
		r = r.ProtoReflect().Type().New().Interface().(R)
	}
	// Both records keep their name in a field "name".
	m := r.ProtoReflect()
	m.Set(m.Descriptor().Fields().ByName("name"), protoreflect.ValueOfString(o.Name))
	return r
}

// DeepCopyInto copies o into out, the spec included.
func (o *Object[R]) DeepCopyInto(out *Object[R]) {
	out.TypeMeta = o.TypeMeta
	o.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Spec = proto.Clone(o.Spec).(R)
}

// DeepCopy returns a copy of o.
func (o *Object[R]) DeepCopy() *Object[R] {
	if o == nil {
		return nil
	}
	out := new(Object[R])
	o.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (o *Object[R]) DeepCopyObject() runtime.Object { return o.DeepCopy() }

// DeepCopy returns a copy of l.
func (l *ObjectList[R]) DeepCopy() *ObjectList[R] {
	if l == nil {
		return nil
	}
	out := &ObjectList[R]{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	if l.Items != nil {
		out.Items = make([]Object[R], len(l.Items))
		for i := range l.Items {
			l.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *ObjectList[R]) DeepCopyObject() runtime.Object { return l.DeepCopy() }
