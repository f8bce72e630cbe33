package etcd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"vwire.dev/sdk-k8s/pkg/registry/etcd"
	v1 "vwire.dev/sdk-k8s/pkg/tools/k8s/apis/networkservicemesh.io/v1"
	"vwire.dev/sdk-k8s/pkg/tools/kubetest"
	"vwire.dev/sdk/pkg/registry/chains/registryserver"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const crds = "../../../deployments/crds"

type (
	nse   = registry.NetworkServiceEndpoint
	event = next.Event[*nse]
)

// start starts an API server with NSM's CRDs and returns a client of it.
func start(t testing.TB) (*kubetest.Cluster, *v1.Client) {
	c := kubetest.Start(t, kubetest.WithCRDs(crds))
	client, err := v1.NewForConfig(c.Config)
	require.NoError(t, err)
	return c, client
}

// nseStore returns an endpoint store whose expiry ends with the test.
func nseStore(t testing.TB, client *v1.Client, opts ...etcd.Option) next.NSE {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return etcd.NewNSE(ctx, client, "default", opts...)
}

func labels(kv ...string) *registry.NetworkServiceLabels {
	l := &registry.NetworkServiceLabels{Labels: map[string]string{}}
	for i := 0; i < len(kv); i += 2 {
		l.Labels[kv[i]] = kv[i+1]
	}
	return l
}

func endpoints() []*nse {
	later := timestamppb.New(time.Now().Add(time.Hour))
	return []*nse{
		{Name: "nse-v4", NetworkServiceNames: []string{"icmp"}, Url: "tcp://127.0.0.1:5000", ExpirationTime: later,
			NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"icmp": labels("app", "web", "zone", "a")}},
		{Name: "nse-v6", NetworkServiceNames: []string{"icmp", "vpn"}, Url: "tcp://[::1]:5000", ExpirationTime: later,
			NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"icmp": labels("app", "web", "zone", "b"), "vpn": labels("app", "db")}},
		{Name: "nse-unix", NetworkServiceNames: []string{"vpn"}, Url: "unix:///var/lib/vw/nse.sock", ExpirationTime: later},
	}
}

func names(events []*event) []string {
	out := []string{}
	for _, ev := range events {
		s := ev.Record.GetName()
		if ev.Deleted {
			s = "-" + s
		}
		out = append(out, s)
	}
	return out
}

func find(t testing.TB, e next.NSE, q *nse) []*event {
	t.Helper()
	var got []*event
	require.NoError(t, e.Find(t.Context(), &next.Query[*nse]{Record: q}, func(ev *event) error {
		got = append(got, ev)
		return nil
	}))
	return got
}

// watch runs a Find with watch until the test ends; its events arrive on the channel.
func watch(t testing.TB, e next.NSE, q *nse) <-chan *event {
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan *event, 100)
	done := make(chan error, 1)
	go func() {
		done <- e.Find(ctx, &next.Query[*nse]{Record: q, Watch: true}, func(ev *event) error {
			events <- ev
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return events
}

// next returns the next n events of a watch, failing after a minute.
func receive(t testing.TB, events <-chan *event, n int) []*event {
	t.Helper()
	var got []*event
	timeout := time.After(time.Minute)
	for len(got) < n {
		select {
		case ev := <-events:
			got = append(got, ev)
		case <-timeout:
			t.Fatalf("got %v, waited for %d events", names(got), n)
		}
	}
	return got
}

// TestFindLikeMemory registers the same endpoints in the store and in memory's and asks both
// the same queries.
func TestFindLikeMemory(t *testing.T) {
	_, client := start(t)
	store, mem := nseStore(t, client), memory.NewNSE()
	for _, e := range endpoints() {
		got, err := store.Register(t.Context(), e)
		require.NoError(t, err)
		require.Equal(t, e.GetUrl(), got.GetUrl())
		_, err = mem.Register(t.Context(), e)
		require.NoError(t, err)
	}
	for _, q := range []*nse{
		{},
		{Name: "nse-v6"},
		{Name: "nse-none"},
		{Name: "nse-v6", NetworkServiceNames: []string{"icmp"}},
		{Name: "nse-unix", NetworkServiceNames: []string{"icmp"}},
		{NetworkServiceNames: []string{"vpn"}},
		{NetworkServiceNames: []string{"icmp"}, NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"icmp": labels("zone", "b")}},
		{NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"vpn": labels("app", "db")}},
		{Url: "unix:///var/lib/vw/nse.sock"},
	} {
		want := names(find(t, mem, q))
		require.Equal(t, want, names(find(t, store, q)), "query %v", q)
	}

	// A second Register replaces the record; Unregister removes it, and again is no error.
	changed := endpoints()[0]
	changed.Url = "tcp://127.0.0.2:5000"
	_, err := store.Register(t.Context(), changed)
	require.NoError(t, err)
	got := find(t, store, &nse{Name: "nse-v4"})
	require.Len(t, got, 1)
	require.Equal(t, changed.GetUrl(), got[0].Record.GetUrl())
	require.NoError(t, store.Unregister(t.Context(), changed))
	require.NoError(t, store.Unregister(t.Context(), changed))
	require.Equal(t, []string{"nse-unix", "nse-v6"}, names(find(t, store, &nse{})))
}

func TestNetworkServices(t *testing.T) {
	_, client := start(t)
	store := etcd.NewNS(client, "default")
	for _, s := range []*registry.NetworkService{{Name: "icmp", Payload: "IP"}, {Name: "l2", Payload: "ETHERNET"}} {
		_, err := store.Register(t.Context(), s)
		require.NoError(t, err)
	}
	var got []string
	require.NoError(t, store.Find(t.Context(), &next.Query[*registry.NetworkService]{Record: &registry.NetworkService{Payload: "ETHERNET"}},
		func(ev *next.Event[*registry.NetworkService]) error {
			got = append(got, ev.Record.GetName())
			return nil
		}))
	require.Equal(t, []string{"l2"}, got)
}

// TestWatchInOrder: a watch gets the current matches, then every change in order, and a record
// that stops matching as Deleted.
func TestWatchInOrder(t *testing.T) {
	_, client := start(t)
	store := nseStore(t, client)
	ctx := t.Context()
	eps := endpoints()
	_, err := store.Register(ctx, eps[0])
	require.NoError(t, err)

	all := watch(t, store, &nse{})
	icmp := watch(t, store, &nse{NetworkServiceNames: []string{"icmp"}})
	require.Equal(t, []string{"nse-v4"}, names(receive(t, all, 1)))
	require.Equal(t, []string{"nse-v4"}, names(receive(t, icmp, 1)))

	_, err = store.Register(ctx, eps[1])
	require.NoError(t, err)
	_, err = store.Register(ctx, eps[2])
	require.NoError(t, err)
	eps[0].NetworkServiceNames = []string{"vpn"} // leaves icmp
	_, err = store.Register(ctx, eps[0])
	require.NoError(t, err)
	require.NoError(t, store.Unregister(ctx, eps[1]))

	got := receive(t, all, 4)
	require.Equal(t, []string{"nse-v6", "nse-unix", "nse-v4", "-nse-v6"}, names(got))
	require.Equal(t, []string{"vpn"}, got[2].Record.GetNetworkServiceNames())
	require.Equal(t, []string{"nse-v6", "-nse-v4", "-nse-v6"}, names(receive(t, icmp, 3)))
	select {
	case ev := <-all:
		t.Fatalf("an event too many: %v", names([]*event{ev}))
	default:
	}
}

// TestBadInput: names Kubernetes cannot store are refused with InvalidArgument and nothing is
// stored; finding or unregistering them finds nothing.
func TestBadInput(t *testing.T) {
	_, client := start(t)
	store := nseStore(t, client)
	for _, name := range []string{"NSE-upper", "vpn@corp.example", "a/b", strings.Repeat("a", 254), ""} {
		_, err := store.Register(t.Context(), &nse{Name: name, Url: "tcp://127.0.0.1:5000"})
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%q: %v", name, err)
		require.Contains(t, err.Error(), "cannot name a Kubernetes object")
		require.Empty(t, find(t, store, &nse{Name: name}))
		require.NoError(t, store.Unregister(t.Context(), &nse{Name: name}))
	}
	list, err := client.NetworkServiceEndpoints("default").List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	require.Empty(t, list.Items)
}

// TestReplicas: two registries on one API server give the same answers, and each one's
// watchers see the other's changes.
func TestReplicas(t *testing.T) {
	_, client := start(t)
	ctx := t.Context()
	replica := func() *registryserver.Server {
		return registryserver.New(registryserver.WithStores(etcd.NewNS(client, "default"), nseStore(t, client)))
	}
	a, b := replica(), replica()
	eps := endpoints()
	_, err := a.NSE.Register(ctx, eps[0])
	require.NoError(t, err)
	watchB := watch(t, b.NSE, &nse{})
	require.Equal(t, []string{"nse-v4"}, names(receive(t, watchB, 1)))
	for _, e := range eps[1:] {
		_, err := a.NSE.Register(ctx, e)
		require.NoError(t, err)
	}
	require.Equal(t, []string{"nse-unix", "nse-v4", "nse-v6"}, names(find(t, b.NSE, &nse{})))
	require.Equal(t, names(find(t, a.NSE, &nse{})), names(find(t, b.NSE, &nse{})))
	require.Equal(t, []string{"nse-v6", "nse-unix"}, names(receive(t, watchB, 2)))
	_, err = a.NS.Register(ctx, &registry.NetworkService{Name: "icmp"})
	require.NoError(t, err)
	var got []*registry.NetworkService
	require.NoError(t, b.NS.Find(ctx, &next.Query[*registry.NetworkService]{Record: &registry.NetworkService{Name: "icmp"}},
		func(ev *next.Event[*registry.NetworkService]) error {
			got = append(got, ev.Record)
			return nil
		}))
	require.Len(t, got, 1)
	require.Equal(t, "IP", got[0].GetPayload(), "setpayload of replica a")
}

// TestExpiry: an endpoint whose registration expired is deleted by the stores (here two, as
// two replicas), whoever registered it; one refreshed meanwhile stays.
func TestExpiry(t *testing.T) {
	_, client := start(t)
	ctx := t.Context()
	stores := []next.NSE{nseStore(t, client), nseStore(t, client)}

	// Written as by a replica that is gone: no expire element here has a timer for them.
	api := client.NetworkServiceEndpoints("default")
	soon := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(time.Now().Add(d)) }
	_, err := api.Create(ctx, v1.New("default", &nse{Name: "refreshed", ExpirationTime: soon(3 * time.Second)}), metav1.CreateOptions{})
	require.NoError(t, err)
	events := watch(t, stores[0], &nse{})
	require.Equal(t, []string{"refreshed"}, names(receive(t, events, 1)))
	_, err = api.Create(ctx, v1.New("default", &nse{Name: "expiring", ExpirationTime: soon(4 * time.Second)}), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = stores[1].Register(ctx, &nse{Name: "refreshed", ExpirationTime: soon(time.Hour)})
	require.NoError(t, err)

	require.Equal(t, []string{"expiring", "refreshed", "-expiring"}, names(receive(t, events, 3)))
	require.Equal(t, []string{"refreshed"}, names(find(t, stores[1], &nse{})))
}

// TestUnregisterOfExpiredLeavesRenewed: expire's Unregister of a registration that expired on
// one replica does not remove the registration another replica renewed.
func TestUnregisterOfExpiredLeavesRenewed(t *testing.T) {
	_, client := start(t)
	ctx := t.Context()
	store := nseStore(t, client)
	_, err := store.Register(ctx, &nse{Name: "nse", ExpirationTime: timestamppb.New(time.Now().Add(time.Hour))})
	require.NoError(t, err)
	require.NoError(t, store.Unregister(ctx, &nse{Name: "nse", ExpirationTime: timestamppb.New(time.Now().Add(-time.Second))}))
	require.Len(t, find(t, store, &nse{}), 1)
	require.NoError(t, store.Unregister(ctx, &nse{Name: "nse"}))
	require.Empty(t, find(t, store, &nse{}))
}

// TestAPIServerRestart: a watch outlives a restart of the API server, and gets the changes
// made after it once, in order.
func TestAPIServerRestart(t *testing.T) {
	c, client := start(t)
	ctx := t.Context()
	store := nseStore(t, client)
	eps := endpoints()
	_, err := store.Register(ctx, eps[0])
	require.NoError(t, err)
	events := watch(t, store, &nse{})
	require.Equal(t, []string{"nse-v4"}, names(receive(t, events, 1)))

	c.RestartAPIServer(t)
	_, err = store.Register(ctx, eps[1])
	require.NoError(t, err)
	require.NoError(t, store.Unregister(ctx, eps[0]))
	require.Equal(t, []string{"nse-v6", "-nse-v4"}, names(receive(t, events, 2)))

	_, err = store.Register(ctx, eps[2])
	require.NoError(t, err)
	require.Equal(t, []string{"nse-unix"}, names(receive(t, events, 1)))
	select {
	case ev := <-events:
		t.Fatalf("an event too many: %v", names([]*event{ev}))
	default:
	}
}

// TestNoAPIServer: without an API server, calls end with Unavailable naming the namespace.
func TestNoAPIServer(t *testing.T) {
	client, err := v1.NewForConfig(&rest.Config{Host: "https://127.0.0.1:1", TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	require.NoError(t, err)
	store := nseStore(t, client)
	_, err = store.Register(t.Context(), endpoints()[0])
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "namespace default")
	for _, w := range []bool{false, true} {
		err = store.Find(t.Context(), &next.Query[*nse]{Record: &nse{}, Watch: w}, func(*event) error { return nil })
		require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	}
	require.Equal(t, codes.Unavailable, status.Code(store.Unregister(t.Context(), endpoints()[0])))
}
