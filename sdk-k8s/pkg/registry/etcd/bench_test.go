package etcd_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "vwire.dev/sdk-k8s/pkg/tools/k8s/apis/networkservicemesh.io/v1"
)

// BenchmarkFindByName finds one endpoint by name among 10,000 stored as custom resources.
func BenchmarkFindByName(b *testing.B) {
	const stored = 10000
	_, client := start(b)
	api := client.NetworkServiceEndpoints("default")
	names := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range names {
				_, err := api.Create(b.Context(), v1.New("default", &nse{
					Name: fmt.Sprintf("nse-%05d", i), NetworkServiceNames: []string{"icmp"}, Url: "tcp://10.0.0.1:5003",
					ExpirationTime: timestamppb.New(time.Now().Add(time.Hour)),
				}), metav1.CreateOptions{})
				require.NoError(b, err)
			}
		})
	}
	for i := range stored {
		names <- i
	}
	close(names)
	wg.Wait()
	store := nseStore(b, client)
	query := &nse{Name: fmt.Sprintf("nse-%05d", stored/2)}
	for b.Loop() {
		if got := find(b, store, query); len(got) != 1 {
			b.Fatalf("found %d", len(got))
		}
	}
}

// BenchmarkRegisterToWatcher measures from a Register to a watcher having the change.
func BenchmarkRegisterToWatcher(b *testing.B) {
	_, client := start(b)
	store := nseStore(b, client)
	events := watch(b, store, &nse{Name: "nse-1"})
	e := endpoints()[0]
	e.Name = "nse-1"
	i := 0
	registerAndSee := func() {
		i++
		e.Url = fmt.Sprintf("tcp://10.0.0.1:%d", 1000+i%60000)
		_, err := store.Register(b.Context(), e)
		require.NoError(b, err)
		if ev := <-events; ev.Record.GetUrl() != e.Url {
			b.Fatalf("watcher got %s, want %s", ev.Record.GetUrl(), e.Url)
		}
	}
	// Not timed: the first object created after the CRDs were installed takes the API server
	// about 2 s (seen on v1.37.1 with a Create alone); the ones after, milliseconds.
	registerAndSee()
	for b.Loop() {
		registerAndSee()
	}
}
