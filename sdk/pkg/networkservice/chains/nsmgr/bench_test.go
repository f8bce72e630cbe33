package nsmgr_test

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"

	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/tools/sandbox"
)

// benchRequestClose measures one Request and its Close from a client on node 0 to an endpoint
// on node `at`, through every hop over gRPC on unix sockets, in a secure mesh (mutual TLS,
// tokens signed with SVIDs, verified and authorized at every hop) and in an insecure one, side by
// side. The endpoint hands out addresses, as a real one does, and records nothing: the tests'
// recorder keeps a copy of every request, which a benchmark would measure along with the mesh.
func benchRequestClose(b *testing.B, nodes, at int) {
	b.Run("secure", func(b *testing.B) { benchMesh(b, sandbox.New(b, nodes), at) })
	b.Run("insecure", func(b *testing.B) { benchMesh(b, sandbox.New(b, nodes, sandbox.Insecure()), at) })
}

func benchMesh(b *testing.B, mesh *sandbox.Domain, at int) {
	mesh.RegisterService(&registry.NetworkService{Name: service})
	mesh.Nodes[at].NewEndpoint(&registry.NetworkServiceEndpoint{Name: "nse-1", NetworkServiceNames: []string{service}},
		point2pointipam.NewServer(netip.MustParsePrefix("172.16.0.0/16"), netip.MustParsePrefix("fd16::/64")))
	nsc := mesh.Nodes[0].NewClient("nsc")
	ctx := context.Background()
	b.ReportAllocs()
	cpu := cpuTime()
	i := 0
	for b.Loop() {
		conn, err := nsc.Request(ctx, request(fmt.Sprintf("c-%d", i), nil))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := nsc.Close(ctx, conn); err != nil {
			b.Fatal(err)
		}
		i++
	}
	// Wall time depends on what else the machine runs; the CPU the whole mesh spent (every
	// component's goroutines, GC included) depends less on it.
	b.ReportMetric(float64(cpuTime()-cpu)/float64(i), "cpu-ns/op")
}

// cpuTime returns the user and system CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLocalRequestClose: client, nsmgr, forwarder, endpoint on one node.
func BenchmarkLocalRequestClose(b *testing.B) { benchRequestClose(b, 1, 0) }

// BenchmarkRemoteRequestClose: client, nsmgr, forwarder, nsmgr, forwarder, endpoint on two nodes.
func BenchmarkRemoteRequestClose(b *testing.B) { benchRequestClose(b, 2, 1) }

// BenchmarkHeldConnections reports the heap and goroutines each held connection costs the whole
// local mesh (client, nsmgr, forwarder and endpoint together), with 1,000 connections held.
func BenchmarkHeldConnections(b *testing.B) {
	const held = 1000
	for b.Loop() {
		b.StopTimer()
		mesh := sandbox.New(b, 1)
		mesh.RegisterService(&registry.NetworkService{Name: service})
		endpoint(mesh.Nodes[0], "nse-1", nil)
		nsc := mesh.Nodes[0].NewClient("nsc")
		ctx := context.Background()
		// One connection first, so that what every mesh holds once (gRPC connections) is not
		// counted against the connections.
		first, err := nsc.Request(ctx, request("warm", nil))
		if err != nil {
			b.Fatal(err)
		}
		heapBefore, goroutinesBefore := heapInUse(), runtime.NumGoroutine()
		b.StartTimer()
		conns := make([]*networkservice.Connection, held)
		for i := range conns {
			if conns[i], err = nsc.Request(ctx, request(fmt.Sprintf("c-%d", i), nil)); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(heapInUse()-heapBefore)/held, "heap-B/conn")
		b.ReportMetric(float64(runtime.NumGoroutine()-goroutinesBefore)/held, "goroutines/conn")
		for _, c := range append(conns, first) {
			if _, err := nsc.Close(ctx, c); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}
