package forwardergone_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/common/orphan"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/common/connect"
	"vwire.dev/sdk/pkg/registry/common/forwardergone"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/recvfd"
	"vwire.dev/sdk/pkg/registry/common/sendfd"
	"vwire.dev/sdk/pkg/registry/core/adapters"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/log"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nse = registry.NetworkServiceEndpoint

const grace = 3 * time.Second

// nsmgr serves recvfd, begin, forwardergone and a store, as an nsmgr keeps its forwarders, over
// gRPC on a unix socket with orphan's stats handler, on a fake clock; hook records what the
// element tells it.
type nsmgr struct {
	fake  *clock.Fake
	hook  *hook
	store next.NSE
	dir   string
	url   *url.URL
}

func newNsmgr(t *testing.T) *nsmgr {
	t.Helper()
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	m := &nsmgr{fake: clock.NewFake(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)), hook: &hook{}, store: memory.NewNSE(),
		dir: dir, url: &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nsm.sock")}}
	ctx, cancel := context.WithCancel(log.WithLogger(clock.WithClock(context.Background(), m.fake), slog.New(slog.DiscardHandler)))
	sockets := fdpass.NewSockets()
	chain := next.Chain(recvfd.NewServer(sockets), begin.NewNSE(),
		forwardergone.NewNSE(ctx, sockets, m.hook.watch, forwardergone.WithGrace(grace)), m.store)
	errs, err := grpcserve.Serve(ctx, m.url, grpcserve.RegistrarFunc(func(s *grpc.Server) {
		registry.RegisterNetworkServiceEndpointRegistryServer(s, adapters.NSEServer(chain))
	}), grpc.StatsHandler(orphan.StatsHandler()))
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for err := range errs {
			t.Error(err)
		}
	})
	return m
}

// forwarder is a forwarder process: its own socket, served, and its own transport to the
// nsmgr; die ends both, as the death of the process does.
type forwarder struct {
	record *nse
	reg    next.NSE
	die    func()
}

func (m *nsmgr) forwarder(t *testing.T, name string) *forwarder {
	t.Helper()
	sock := &url.URL{Scheme: "unix", Path: filepath.Join(m.dir, fmt.Sprintf("%s-%d.sock", name, time.Now().UnixNano()))}
	ctx, stop := context.WithCancel(context.Background())
	errs, err := grpcserve.Serve(ctx, sock, grpcserve.RegistrarFunc(func(*grpc.Server) {}))
	require.NoError(t, err)
	cc, err := regclient.Dial(m.url)
	require.NoError(t, err)
	var once sync.Once
	die := func() {
		once.Do(func() {
			_ = cc.Close()
			stop()
			for range errs {
			}
		})
	}
	t.Cleanup(die)
	return &forwarder{record: &nse{Name: name, NetworkServiceNames: []string{"forwarder"}, Url: sock.String()},
		reg: next.Chain(sendfd.NewNSE(), connect.NewNSE(cc)), die: die}
}

func (f *forwarder) register(t *testing.T) {
	t.Helper()
	_, err := f.reg.Register(context.Background(), f.record)
	require.NoError(t, err)
}

// registered says whether the nsmgr keeps a forwarder of that name.
func (m *nsmgr) registered(t *testing.T, name string) bool {
	t.Helper()
	found := false
	require.NoError(t, m.store.Find(context.Background(), &next.Query[*nse]{Record: &nse{Name: name}},
		func(*next.Event[*nse]) error { found = true; return nil }))
	return found
}

// graceStarted waits until the element noticed that a forwarder left and armed its grace.
func (m *nsmgr) graceStarted(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return m.fake.Pending() == 1 }, 5*time.Second, time.Millisecond,
		"the element did not notice that the forwarder left")
}

// hook records, in order, what the element tells the nsmgr's caller.
type hook struct {
	mu     sync.Mutex
	events []string
}

func (h *hook) add(ev string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

func (h *hook) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

func (h *hook) watch(_ context.Context, fwd *nse, socket *os.File) forwardergone.Watched {
	u := "no socket"
	if socket != nil {
		var err error
		if u, err = fdpass.URLOf(socket); err != nil {
			u = err.Error()
		}
	}
	h.add(fmt.Sprintf("watch %s %s", fwd.GetName(), map[bool]string{true: "its socket", false: u}[u == fwd.GetUrl()]))
	return watched{h: h, name: fwd.GetName()}
}

type watched struct {
	h    *hook
	name string
}

func (w watched) Gone(context.Context) { w.h.add("gone " + w.name) }
func (w watched) Close()               { w.h.add("close " + w.name) }

// TestDeadForwarderIsGoneAfterGrace: a forwarder registers with its socket passed, refreshes,
// and dies: once the grace has passed, not before, the hook hears it is gone, then it is
// unregistered.
func TestDeadForwarderIsGoneAfterGrace(t *testing.T) {
	m := newNsmgr(t)
	fwd := m.forwarder(t, "fwd-1")
	fwd.register(t)
	fwd.register(t) // a refresh over the same transport is no new registration
	require.Equal(t, []string{"watch fwd-1 its socket"}, m.hook.got())

	fwd.die()
	m.graceStarted(t)
	m.fake.Advance(grace - time.Millisecond)
	require.Equal(t, []string{"watch fwd-1 its socket"}, m.hook.got(), "gone before the grace ended")
	require.True(t, m.registered(t, "fwd-1"))

	m.fake.Advance(time.Millisecond)
	require.Eventually(t, func() bool { return len(m.hook.got()) == 3 }, 5*time.Second, time.Millisecond)
	require.Equal(t, []string{"watch fwd-1 its socket", "gone fwd-1", "close fwd-1"}, m.hook.got())
	require.False(t, m.registered(t, "fwd-1"), "a forwarder gone for good stays registered")
}

// TestBackWithinGraceIsNotGone: the forwarder's transport ends and it registers again over a
// new one within the grace (it lives; its nsmgr connection broke): it is not gone. Its new
// registration is watched, and when that transport ends for good, it is gone.
func TestBackWithinGraceIsNotGone(t *testing.T) {
	m := newNsmgr(t)
	first := m.forwarder(t, "fwd-1")
	first.register(t)
	first.die()
	m.graceStarted(t)
	m.fake.Advance(grace / 2)

	again := m.forwarder(t, "fwd-1")
	again.register(t)
	require.Zero(t, m.fake.Pending(), "the grace still runs after the forwarder came back")
	m.fake.Advance(2 * grace)
	require.Equal(t, []string{"watch fwd-1 its socket", "watch fwd-1 its socket", "close fwd-1"}, m.hook.got())
	require.True(t, m.registered(t, "fwd-1"))

	again.die()
	m.graceStarted(t)
	m.fake.Advance(grace)
	require.Eventually(t, func() bool { return !m.registered(t, "fwd-1") }, 5*time.Second, time.Millisecond)
	require.Equal(t, []string{"gone fwd-1", "close fwd-1"}, m.hook.got()[3:])
}

// TestUnregisteredThenSuccessorIsNotGone: a forwarder stopped with SIGTERM unregisters (leaving
// its vWires) and its successor registers under its name within the grace: nothing is gone.
func TestUnregisteredThenSuccessorIsNotGone(t *testing.T) {
	m := newNsmgr(t)
	old := m.forwarder(t, "fwd-1")
	old.register(t)
	require.NoError(t, old.reg.Unregister(context.Background(), old.record))
	old.die()
	m.graceStarted(t)

	successor := m.forwarder(t, "fwd-1")
	successor.register(t)
	require.Zero(t, m.fake.Pending(), "the grace still runs after a successor registered")
	m.fake.Advance(2 * grace)
	require.Equal(t, []string{"watch fwd-1 its socket", "watch fwd-1 its socket", "close fwd-1"}, m.hook.got())
	require.True(t, m.registered(t, "fwd-1"))
}

// TestUnregisteredWithoutSuccessorIsGone: a forwarder unregisters and nobody registers under
// its name within the grace: it is gone for good once the grace has passed.
func TestUnregisteredWithoutSuccessorIsGone(t *testing.T) {
	m := newNsmgr(t)
	fwd := m.forwarder(t, "fwd-1")
	fwd.register(t)
	other := m.forwarder(t, "fwd-2") // another forwarder of the node registers meanwhile
	require.NoError(t, fwd.reg.Unregister(context.Background(), fwd.record))
	m.graceStarted(t)
	other.register(t)

	m.fake.Advance(grace - time.Millisecond)
	require.Equal(t, []string{"watch fwd-1 its socket", "watch fwd-2 its socket"}, m.hook.got())
	m.fake.Advance(time.Millisecond)
	require.Eventually(t, func() bool { return len(m.hook.got()) == 4 }, 5*time.Second, time.Millisecond)
	require.Equal(t, []string{"gone fwd-1", "close fwd-1"}, m.hook.got()[2:])
	require.True(t, m.registered(t, "fwd-2"))
}
