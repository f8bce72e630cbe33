package v1_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	v1 "vwire.dev/sdk-k8s/pkg/tools/k8s/apis/networkservicemesh.io/v1"
	"vwire.dev/sdk-k8s/pkg/tools/kubetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const crds = "../../../../../../deployments/crds"

func nse() *registry.NetworkServiceEndpoint {
	return &registry.NetworkServiceEndpoint{
		Name:                "nse-1",
		NetworkServiceNames: []string{"icmp", "vpn"},
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{
			"icmp": {Labels: map[string]string{"app": "web"}},
		},
		Url:                     "tcp://[fd00::1]:5003",
		ExpirationTime:          timestamppb.New(time.Unix(1900000000, 5)),
		InitialRegistrationTime: timestamppb.New(time.Unix(1800000000, 0)),
		PathIds:                 []string{"nse-1", "registry"},
	}
}

func ns() *registry.NetworkService {
	return &registry.NetworkService{
		Name:    "icmp",
		Payload: "ETHERNET",
		Matches: []*registry.Match{{
			SourceSelector: map[string]string{"app": "web"},
			Routes:         []*registry.Destination{{DestinationSelector: map[string]string{"zone": "a"}, Weight: 2}},
			Fallthrough:    true,
			Metadata:       &registry.Metadata{Labels: map[string]string{"forwarder": "fwd-a"}},
		}},
		PathIds: []string{"nse-1"},
	}
}

func TestDeepCopySharesNothing(t *testing.T) {
	o := v1.New("nsm-system", nse())
	o.Labels = map[string]string{"a": "b"}
	c := o.DeepCopy()
	c.Spec.NetworkServiceLabels["icmp"].Labels["app"] = "db"
	c.Spec.ExpirationTime.Seconds = 1
	c.Labels["a"] = "c"
	require.True(t, proto.Equal(nse(), o.Spec))
	require.Equal(t, "b", o.Labels["a"])

	l := &v1.NetworkServiceEndpointList{Items: []v1.NetworkServiceEndpoint{*o.DeepCopy()}}
	lc := l.DeepCopyObject().(*v1.NetworkServiceEndpointList)
	lc.Items[0].Spec.Url = "unix:///x"
	require.Equal(t, nse().GetUrl(), l.Items[0].Spec.GetUrl())
}

func TestKinds(t *testing.T) {
	require.Equal(t, "NetworkService", v1.Kind[*registry.NetworkService]())
	require.Equal(t, "networkserviceendpoints", v1.Resource[*registry.NetworkServiceEndpoint]())
}

// TestRoundTrip stores both kinds on a real API server with the generated CRDs and reads them
// back unchanged, through Get, List and Watch.
func TestRoundTrip(t *testing.T) {
	c := kubetest.Start(t, kubetest.WithCRDs(crds))
	client, err := v1.NewForConfig(c.Config)
	require.NoError(t, err)
	ctx := t.Context()

	nses := client.NetworkServiceEndpoints("default")
	w, err := nses.Watch(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	defer w.Stop()
	created, err := nses.Create(ctx, v1.New("default", nse()), metav1.CreateOptions{})
	require.NoError(t, err)
	require.True(t, proto.Equal(nse(), created.Record()), "created: %v", created.Spec)
	got, err := nses.Get(ctx, "nse-1", metav1.GetOptions{})
	require.NoError(t, err)
	require.True(t, proto.Equal(nse(), got.Record()), "got: %v", got.Spec)
	list, err := nses.List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, list.Items, 1)
	require.True(t, proto.Equal(nse(), list.Items[0].Record()))
	ev := <-w.ResultChan()
	require.Equal(t, watch.Added, ev.Type)
	require.True(t, proto.Equal(nse(), ev.Object.(*v1.NetworkServiceEndpoint).Record()))

	services := client.NetworkServices("default")
	_, err = services.Create(ctx, v1.New("default", ns()), metav1.CreateOptions{})
	require.NoError(t, err)
	gotNS, err := services.Get(ctx, "icmp", metav1.GetOptions{})
	require.NoError(t, err)
	require.True(t, proto.Equal(ns(), gotNS.Record()), "got: %v", gotNS.Spec)

	// The schema refuses a field of the wrong type.
	bad := []byte(`{"apiVersion":"networkservicemesh.io/v1","kind":"NetworkServiceEndpoint","metadata":{"name":"bad"},"spec":{"url":5}}`)
	err = post(t, c.Config, "networkserviceendpoints", bad)
	require.True(t, apierrors.IsInvalid(err), "got %v", err)
}

// TestNSMObjects reads objects as NSM's own tools write them: JSON by hand, a spec without name.
func TestNSMObjects(t *testing.T) {
	c := kubetest.Start(t, kubetest.WithCRDs(crds))
	client, err := v1.NewForConfig(c.Config)
	require.NoError(t, err)
	obj := fmt.Sprintf(`{"apiVersion":"networkservicemesh.io/v1","kind":"NetworkServiceEndpoint",
		"metadata":{"name":"nse-by-hand"},
		"spec":{"network_service_names":["icmp"],"url":"tcp://10.0.0.1:5003","expiration_time":{"seconds":%d},
		"network_service_labels":{"icmp":{"labels":{"app":"web"}}},"field_of_a_newer_nsm":"kept"}}`, 1900000000)
	require.NoError(t, post(t, c.Config, "networkserviceendpoints", []byte(obj)))
	got, err := client.NetworkServiceEndpoints("default").Get(t.Context(), "nse-by-hand", metav1.GetOptions{})
	require.NoError(t, err)
	want := &registry.NetworkServiceEndpoint{
		Name: "nse-by-hand", NetworkServiceNames: []string{"icmp"}, Url: "tcp://10.0.0.1:5003",
		ExpirationTime:       &timestamppb.Timestamp{Seconds: 1900000000},
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"icmp": {Labels: map[string]string{"app": "web"}}},
	}
	require.True(t, proto.Equal(want, got.Record()), "got: %v", got.Record())

	// kubectl's names for them, as NSM's.
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	require.NoError(t, err)
	resources, err := dc.ServerResourcesForGroupVersion("networkservicemesh.io/v1")
	require.NoError(t, err)
	short := map[string][]string{}
	for _, r := range resources.APIResources {
		short[r.Name] = r.ShortNames
		require.True(t, r.Namespaced, r.Name)
	}
	require.Equal(t, map[string][]string{"networkservices": {"netsvc", "netsvcs"}, "networkserviceendpoints": {"nse", "nses"}}, short)
}

// post creates an object from raw JSON, as kubectl would send it.
func post(t *testing.T, cfg *rest.Config, resource string, body []byte) error {
	var obj map[string]any
	require.NoError(t, json.Unmarshal(body, &obj))
	dc, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	_, err = dc.Resource(v1.SchemeGroupVersion.WithResource(resource)).Namespace("default").
		Create(t.Context(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	return err
}
