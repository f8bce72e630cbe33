package memory_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/core/adapters"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/metrictest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type (
	nse   = registry.NetworkServiceEndpoint
	event = next.Event[*nse]
)

func labels(kv ...string) *registry.NetworkServiceLabels {
	l := &registry.NetworkServiceLabels{Labels: map[string]string{}}
	for i := 0; i < len(kv); i += 2 {
		l.Labels[kv[i]] = kv[i+1]
	}
	return l
}

// endpoints is the store content the find tests query, with IPv4, IPv6 and unix URLs.
func endpoints() []*nse {
	return []*nse{
		{Name: "nse-v4", NetworkServiceNames: []string{"icmp"}, Url: "tcp://127.0.0.1:5000",
			NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"icmp": labels("app", "web", "zone", "a")}},
		{Name: "nse-v6", NetworkServiceNames: []string{"icmp", "vpn"}, Url: "tcp://[::1]:5000",
			NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"icmp": labels("app", "web", "zone", "b"), "vpn": labels("app", "db")}},
		{Name: "nse-unix", NetworkServiceNames: []string{"vpn"}, Url: "unix:///var/lib/vw/nse.sock"},
	}
}

func names(events []*event) []string {
	var out []string
	for _, ev := range events {
		s := ev.Record.GetName()
		if ev.Deleted {
			s = "-" + s
		}
		out = append(out, s)
	}
	return out
}

func find(t *testing.T, e next.NSE, q *nse) []*event {
	t.Helper()
	var got []*event
	require.NoError(t, e.Find(context.Background(), &next.Query[*nse]{Record: q}, func(ev *event) error {
		got = append(got, ev)
		return nil
	}))
	return got
}

// serve serves e on a unix socket and returns e as a remote element, reached over gRPC.
func serve(t *testing.T, e next.NSE, dialOpts ...grpc.DialOption) next.NSE {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	lis, err := net.Listen("unix", filepath.Join(dir, "registry.sock"))
	require.NoError(t, err)
	srv := grpc.NewServer()
	registry.RegisterNetworkServiceEndpointRegistryServer(srv, adapters.NSEServer(e))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })

	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dialOpts...)
	cc, err := grpc.NewClient("unix://"+lis.Addr().String(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return adapters.NSEClient(registry.NewNetworkServiceEndpointRegistryClient(cc))
}

func TestFindNSE(t *testing.T) {
	store := memory.NewNSE()
	for _, r := range endpoints() {
		_, err := store.Register(context.Background(), r)
		require.NoError(t, err)
	}
	remote := serve(t, store)
	for _, tc := range []struct {
		name  string
		query *nse
		want  []string
	}{
		{"empty query matches all, sorted by name", &nse{}, []string{"nse-unix", "nse-v4", "nse-v6"}},
		{"nil query record matches all", nil, []string{"nse-unix", "nse-v4", "nse-v6"}},
		{"by name", &nse{Name: "nse-v6"}, []string{"nse-v6"}},
		{"unknown name", &nse{Name: "nse-x"}, nil},
		{"by name and a field it does not match", &nse{Name: "nse-v6", Url: "tcp://127.0.0.1:5000"}, nil},
		{"by network service", &nse{NetworkServiceNames: []string{"icmp"}}, []string{"nse-v4", "nse-v6"}},
		{"by any of several network services", &nse{NetworkServiceNames: []string{"vpn", "icmp"}}, []string{"nse-unix", "nse-v4", "nse-v6"}},
		{"unknown network service", &nse{NetworkServiceNames: []string{"dns"}}, nil},
		{"by IPv4 URL", &nse{Url: "tcp://127.0.0.1:5000"}, []string{"nse-v4"}},
		{"by IPv6 URL", &nse{Url: "tcp://[::1]:5000"}, []string{"nse-v6"}},
		{"by unix URL", &nse{Url: "unix:///var/lib/vw/nse.sock"}, []string{"nse-unix"}},
		{"URL must be equal, not a part", &nse{Url: "tcp://"}, nil},
		{"by labels of a service", &nse{NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"icmp": labels("app", "web")}},
			[]string{"nse-v4", "nse-v6"}},
		{"labels are a subset", &nse{NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"icmp": labels("app", "web", "zone", "b")}},
			[]string{"nse-v6"}},
		{"labels of a service the endpoint has none for", &nse{NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"vpn": labels()}},
			[]string{"nse-v6"}},
		{"labels of every service in the query", &nse{NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{
			"icmp": labels("app", "web"), "vpn": labels("app", "db")}}, []string{"nse-v6"}},
		{"label value differs", &nse{NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"icmp": labels("app", "db")}}, nil},
		{"service and labels", &nse{NetworkServiceNames: []string{"vpn"}, NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"vpn": labels("app", "db")}},
			[]string{"nse-v6"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, names(find(t, store, tc.query)), "in-process")
			require.Equal(t, tc.want, names(find(t, remote, tc.query)), "over gRPC")
		})
	}
}

func TestFindNS(t *testing.T) {
	store := memory.NewNS()
	for _, ns := range []*registry.NetworkService{{Name: "icmp", Payload: "IP"}, {Name: "l2", Payload: "ETHERNET"}, {Name: "vpn", Payload: "IP"}} {
		_, err := store.Register(context.Background(), ns)
		require.NoError(t, err)
	}
	for _, tc := range []struct {
		name  string
		query *registry.NetworkService
		want  []string
	}{
		{"all", &registry.NetworkService{}, []string{"icmp", "l2", "vpn"}},
		{"by name", &registry.NetworkService{Name: "l2"}, []string{"l2"}},
		{"by payload", &registry.NetworkService{Payload: "IP"}, []string{"icmp", "vpn"}},
		{"by name and payload that differ", &registry.NetworkService{Name: "l2", Payload: "IP"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			require.NoError(t, store.Find(context.Background(), &next.Query[*registry.NetworkService]{Record: tc.query},
				func(ev *next.Event[*registry.NetworkService]) error {
					got = append(got, ev.Record.GetName())
					return nil
				}))
			require.Equal(t, tc.want, got)
		})
	}
}

func TestRegisterReplacesAndUnregisterIsIdempotent(t *testing.T) {
	ctx := context.Background()
	store := memory.NewNSE()
	in := &nse{Name: "nse-1", NetworkServiceNames: []string{"icmp"}, Url: "tcp://127.0.0.1:5000"}
	got, err := store.Register(ctx, in)
	require.NoError(t, err)
	require.Equal(t, "tcp://127.0.0.1:5000", got.GetUrl())

	in.Url = "tcp://[::1]:5000" // the caller's copy: the store must not see this
	require.Equal(t, "tcp://127.0.0.1:5000", find(t, store, &nse{Name: "nse-1"})[0].Record.GetUrl())
	find(t, store, &nse{Name: "nse-1"})[0].Record.Url = "changed by a reader"
	require.Equal(t, "tcp://127.0.0.1:5000", find(t, store, &nse{Name: "nse-1"})[0].Record.GetUrl())

	// Re-registering under another service moves the record in the service index.
	_, err = store.Register(ctx, &nse{Name: "nse-1", NetworkServiceNames: []string{"vpn"}, Url: "tcp://[::1]:5000"})
	require.NoError(t, err)
	require.Empty(t, find(t, store, &nse{NetworkServiceNames: []string{"icmp"}}))
	require.Equal(t, []string{"nse-1"}, names(find(t, store, &nse{NetworkServiceNames: []string{"vpn"}})))

	require.NoError(t, store.Unregister(ctx, &nse{Name: "nse-1"}))
	require.NoError(t, store.Unregister(ctx, &nse{Name: "nse-1"}), "deleting twice is not an error")
	require.Empty(t, find(t, store, &nse{}))
	require.Empty(t, find(t, store, &nse{NetworkServiceNames: []string{"vpn"}}))

	_, err = store.Register(ctx, &nse{Url: "tcp://127.0.0.1:5000"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, err.Error(), "no name")
}

// watch runs a watching Find on e in the background; its events arrive on the returned channel
// and its error when ctx ends.
func watch(ctx context.Context, e next.NSE, q *nse) (<-chan *event, <-chan error) {
	events, done := make(chan *event, 1000), make(chan error, 1)
	go func() {
		done <- e.Find(ctx, &next.Query[*nse]{Record: q, Watch: true}, func(ev *event) error {
			events <- ev
			return nil
		})
	}()
	return events, done
}

func take(t *testing.T, events <-chan *event, n int) []string {
	t.Helper()
	var got []*event
	for range n {
		got = append(got, <-events)
	}
	return names(got)
}

func TestWatchOverGRPCSeesChangesInOrder(t *testing.T) {
	for _, url := range []string{"tcp://127.0.0.1:5000", "tcp://[::1]:5000", "unix:///run/vw/nse.sock"} {
		t.Run(url, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			store := memory.NewNSE()
			remote := serve(t, store)
			_, err := remote.Register(ctx, &nse{Name: "before", NetworkServiceNames: []string{"icmp"}, Url: url})
			require.NoError(t, err)

			events, done := watch(ctx, remote, &nse{NetworkServiceNames: []string{"icmp"}})
			require.Equal(t, []string{"before"}, take(t, events, 1), "first the current records")

			_, err = remote.Register(ctx, &nse{Name: "a", NetworkServiceNames: []string{"icmp"}, Url: url})
			require.NoError(t, err)
			_, err = remote.Register(ctx, &nse{Name: "a", NetworkServiceNames: []string{"icmp"}, Url: url,
				NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"icmp": labels("v", "2")}})
			require.NoError(t, err)
			_, err = remote.Register(ctx, &nse{Name: "other", NetworkServiceNames: []string{"vpn"}, Url: url})
			require.NoError(t, err)
			require.NoError(t, remote.Unregister(ctx, &nse{Name: "a"}))
			_, err = remote.Register(ctx, &nse{Name: "before", NetworkServiceNames: []string{"vpn"}, Url: url})
			require.NoError(t, err)

			got := make([]*event, 4)
			for i := range got {
				got[i] = <-events
			}
			require.Equal(t, []string{"a", "a", "-a", "-before"}, names(got),
				"add, update, delete, and a record that left the query as deleted; never the other service")
			require.Empty(t, got[0].Record.GetNetworkServiceLabels())
			require.Equal(t, "2", got[1].Record.GetNetworkServiceLabels()["icmp"].GetLabels()["v"])
			require.Equal(t, url, got[3].Record.GetUrl())

			cancel()
			require.Error(t, <-done, "the client sees its own cancel")
		})
	}
}

func TestConcurrentRegistrationsOverGRPC(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	remote := serve(t, memory.NewNSE())
	events, done := watch(ctx, remote, &nse{NetworkServiceNames: []string{"icmp"}})

	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			_, err := remote.Register(ctx, &nse{Name: fmt.Sprintf("nse-%03d", i), NetworkServiceNames: []string{"icmp"},
				Url: fmt.Sprintf("tcp://127.0.0.1:%d", 5000+i)})
			require.NoError(t, err)
		})
	}
	wg.Wait()

	all := find(t, remote, &nse{NetworkServiceNames: []string{"icmp"}})
	require.Len(t, all, 100)
	require.Equal(t, "nse-000", all[0].Record.GetName())
	require.Equal(t, "nse-099", all[99].Record.GetName())

	seen := map[string]bool{}
	for range 100 {
		seen[(<-events).Record.GetName()] = true
	}
	require.Len(t, seen, 100, "the watcher saw every registration once")
	cancel()
	<-done
}

func TestSlowWatcherIsEndedAndDoesNotBlock(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A fixed window keeps gRPC from buffering more than 64 KiB for the reader that does not read.
	remote := serve(t, memory.NewNSE(memory.WithWatchQueue(16)), grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))

	stuck := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- remote.Find(ctx, &next.Query[*nse]{Record: &nse{}, Watch: true}, func(*event) error {
			<-stuck // a reader that stopped reading
			return nil
		})
	}()
	bulk := strings.Repeat("x", 512)
	for i := range 1000 {
		_, err := remote.Register(ctx, &nse{Name: fmt.Sprintf("nse-%04d", i), Url: "tcp://[::1]:5000",
			NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"icmp": labels("bulk", bulk)}})
		require.NoError(t, err, "registrations go on while a watcher is stuck")
	}
	close(stuck)
	err := <-done
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "watch again")
}

func TestWatchEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	store := memory.NewNSE()
	events, done := watch(ctx, store, nil) // no query record: everything
	_, err := store.Register(ctx, &nse{Name: "a"})
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, take(t, events, 1))
	cancel()
	require.NoError(t, <-done)
}

func fill(b *testing.B, n int) next.NSE {
	store := memory.NewNSE()
	for i := range n {
		_, err := store.Register(context.Background(), &nse{Name: fmt.Sprintf("nse-%05d", i),
			NetworkServiceNames: []string{fmt.Sprintf("ns-%d", i%100)}, Url: "tcp://[::1]:5000"})
		require.NoError(b, err)
	}
	return store
}

// BenchmarkFindByName10000 holds the goal: one endpoint by name among 10,000 in at most 20 µs.
func BenchmarkFindByName10000(b *testing.B) {
	store := fill(b, 10000)
	q := &next.Query[*nse]{Record: &nse{Name: "nse-04242"}}
	found := 0
	send := func(*event) error { found++; return nil }
	b.ReportAllocs()
	for b.Loop() {
		if err := store.Find(context.Background(), q, send); err != nil {
			b.Fatal(err)
		}
	}
	if found == 0 {
		b.Fatal("not found")
	}
}

func BenchmarkRegister(b *testing.B) {
	store := fill(b, 10000)
	r := &nse{Name: "nse-04242", NetworkServiceNames: []string{"ns-42"}, Url: "tcp://127.0.0.1:5000"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := store.Register(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMetricsReportSizesAndWatches(t *testing.T) {
	provider, reader := metrictest.Provider(t)
	remote := serve(t, memory.NewNSE(memory.WithMeterProvider(provider)))
	services := memory.NewNS(memory.WithMeterProvider(provider))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	for _, r := range append(endpoints(), &nse{Name: "fwd-1", NetworkServiceNames: []string{"forwarder"}, Url: "unix:///f.sock"}) {
		_, err := remote.Register(ctx, r)
		require.NoError(t, err)
	}
	_, err := services.Register(ctx, &registry.NetworkService{Name: "icmp"})
	require.NoError(t, err)
	events, done := watch(ctx, remote, &nse{NetworkServiceNames: []string{"icmp"}})
	require.Len(t, take(t, events, 2), 2) // the watch runs
	require.Equal(t, map[string]int64{
		"vwire.registry.endpoints{nsm.network_service=icmp}":      2,
		"vwire.registry.endpoints{nsm.network_service=vpn}":       2,
		"vwire.registry.endpoints{nsm.network_service=forwarder}": 1,
		"vwire.registry.services{}":                               1,
		"vwire.registry.watches{vwire.registry.record=nse}":       1,
		"vwire.registry.watches{vwire.registry.record=ns}":        0,
	}, metrictest.Collect(t, reader))

	require.NoError(t, remote.Unregister(ctx, &nse{Name: "nse-v6"}))
	require.NoError(t, remote.Unregister(ctx, &nse{Name: "nse-unix"}))
	cancel()
	require.Error(t, <-done)
	require.Eventually(t, func() bool {
		return metrictest.Collect(t, reader)["vwire.registry.watches{vwire.registry.record=nse}"] == 0
	}, 10*time.Second, time.Millisecond, "the watch ended on the server")
	require.Equal(t, map[string]int64{
		"vwire.registry.endpoints{nsm.network_service=icmp}":      1,
		"vwire.registry.endpoints{nsm.network_service=forwarder}": 1,
		"vwire.registry.services{}":                               1,
		"vwire.registry.watches{vwire.registry.record=nse}":       0,
		"vwire.registry.watches{vwire.registry.record=ns}":        0,
	}, metrictest.Collect(t, reader))
}
