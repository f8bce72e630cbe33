package v1

import (
	"fmt"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/registry"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/gentype"
	"k8s.io/client-go/rest"

	"vwire.dev/sdk/pkg/registry/core/next"
)

// GroupName is the API group of NSM's resources.
const GroupName = "networkservicemesh.io"

// SchemeGroupVersion is the group and version of these resources.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1"}

// Scheme knows these resources and the meta types a client sends with them.
var Scheme = runtime.NewScheme()

func init() {
	if err := AddToScheme(Scheme); err != nil {
		panic(err)
	}
}

// AddToScheme adds both kinds and their lists to s.
func AddToScheme(s *runtime.Scheme) error {
	addKind[*registry.NetworkService](s)
	addKind[*registry.NetworkServiceEndpoint](s)
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}

// addKind names the kind explicitly: a generic type's Go name is not its kind.
func addKind[R next.Record](s *runtime.Scheme) {
	s.AddKnownTypeWithName(SchemeGroupVersion.WithKind(Kind[R]()), new(Object[R]))
	s.AddKnownTypeWithName(SchemeGroupVersion.WithKind(Kind[R]()+"List"), new(ObjectList[R]))
}

// Interface is the typed client of one kind in one namespace: Get, List, Watch, Create,
// Update, Patch, Delete (client-go's generic typed client, as generated clientsets use).
type Interface[R next.Record] = *gentype.ClientWithList[*Object[R], *ObjectList[R]]

// Client reaches NSM's resources on an API server.
type Client struct {
	rest rest.Interface
}

// NewForConfig returns a client of the API server cfg describes.
func NewForConfig(cfg *rest.Config) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &SchemeGroupVersion
	cfg.APIPath = "/apis"
	cfg.ContentType = runtime.ContentTypeJSON
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(Scheme).WithoutConversion()
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	c, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("networkservicemesh.io/v1: client of %s: %w", cfg.Host, err)
	}
	return &Client{rest: c}, nil
}

// NetworkServices returns the client of the NetworkServices of namespace.
func (c *Client) NetworkServices(namespace string) Interface[*registry.NetworkService] {
	return For[*registry.NetworkService](c, namespace)
}

// NetworkServiceEndpoints returns the client of the NetworkServiceEndpoints of namespace.
func (c *Client) NetworkServiceEndpoints(namespace string) Interface[*registry.NetworkServiceEndpoint] {
	return For[*registry.NetworkServiceEndpoint](c, namespace)
}

// For returns the client of the kind whose spec is R in namespace, for code written once for
// both kinds.
func For[R next.Record](c *Client, namespace string) Interface[R] {
	return gentype.NewClientWithList(Resource[R](), c.rest, runtime.NewParameterCodec(Scheme), namespace,
		func() *Object[R] { return new(Object[R]) },
		func() *ObjectList[R] { return new(ObjectList[R]) })
}

// Kind returns the kind whose spec is R: NSM named each kind as its record's message.
func Kind[R next.Record]() string {
	var r R
	return string(r.ProtoReflect().Descriptor().Name())
}

// Resource returns the plural name of the kind whose spec is R, as in URLs and RBAC rules:
// networkservices, networkserviceendpoints.
func Resource[R next.Record]() string { return strings.ToLower(Kind[R]()) + "s" }
