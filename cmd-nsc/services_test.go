package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/stretchr/testify/require"

	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
)

func urls(t *testing.T, list string) serviceURLs {
	t.Helper()
	var s serviceURLs
	require.NoError(t, s.Decode(list))
	return s
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name, have, want, gone, added string
	}{
		{"same", "kernel://a/x,kernel://b/y", "kernel://a/x,kernel://b/y", "", ""},
		{"same, other order and label order", "kernel://a/x?p=1&q=2,kernel://b/y", "kernel://b/y,kernel://a/x?q=2&p=1", "", ""},
		{"one added", "kernel://a/x", "kernel://a/x,kernel://c/z", "", "kernel://c/z"},
		{"one removed", "kernel://a/x,kernel://b/y", "kernel://a/x", "kernel://b/y", ""},
		{"added and removed", "kernel://a/x,kernel://b/y", "kernel://a/x,kernel://c/z", "kernel://b/y", "kernel://c/z"},
		{"a label changed", "kernel://a/x?app=web", "kernel://a/x?app=db", "kernel://a/x?app=web", "kernel://a/x?app=db"},
		{"an interface renamed", "kernel://a/x", "kernel://a/w", "kernel://a/x", "kernel://a/w"},
		{"a service without a mechanism is kernel's", "kernel://a/x", "a/x", "", ""},
		// Names by position: b was nsm-2 and is nsm-1 once a goes.
		{"a positional name moves", "kernel://a,kernel://b", "kernel://b", "kernel://a/nsm-1,kernel://b/nsm-2", "kernel://b/nsm-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gone, added := diff(urls(t, tc.have), urls(t, tc.want))
			require.Equal(t, tc.gone, gone.String())
			require.Equal(t, tc.added, added.String())
		})
	}
}

func TestNextWait(t *testing.T) {
	var waits []time.Duration
	for w := time.Duration(0); len(waits) < 7; {
		w = nextWait(w)
		waits = append(waits, w)
	}
	s := time.Second
	require.Equal(t, []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s}, waits)
}

// writeServices replaces the file at path with list by a rename, as the kubelet replaces a
// downward-API file, so that the client never reads half of it.
func writeServices(t *testing.T, path, list string) {
	t.Helper()
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte(list), 0o644))
	require.NoError(t, os.Rename(tmp, path))
}

// waitCount waits until the client wrote s to stderr n times.
func waitCount(t *testing.T, nsc *cmdtest.Process, s string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Count(nsc.Stderr(), s) >= n }, cmdtest.WaitLimit, followEvery/10,
		"%q %d times in the client's log:\n%s", s, n, nsc.Stderr())
}

// TestLiveServices: a client that reads its list from NSM_NETWORK_SERVICES_FILE follows the
// file: a service added is connected, one removed closed, and the one that stayed is not asked
// for again (the endpoint sees no event for it until the client stops). A list that is not valid,
// or a file gone, changes nothing; SIGHUP reads the file again.
func TestLiveServices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	u := serveEndpoint(t)
	m := watch(t, ctx, u)
	file := filepath.Join(cmdtest.TempDir(t), "services")
	writeServices(t, file, "kernel://icmp-responder/nsm-1,kernel://icmp-responder/nsm-2?app=two\n")

	cmd, args := clientCommand()
	nsc := cmdtest.Start(t, cmd, []string{
		"NSM_CONNECT_TO=" + u.String(),
		"NSM_NETWORK_SERVICES=kernel://ignored/nsm-9", // the file replaces it
		"NSM_NETWORK_SERVICES_FILE=" + file,
	}, args...)
	first := one(t, m.next(networkservice.ConnectionEventType_UPDATE))
	second := one(t, m.next(networkservice.ConnectionEventType_UPDATE))
	require.Equal(t, "nsm-1", kernel.ToMechanism(first.GetMechanism()).GetInterfaceName())
	require.Equal(t, "nsm-2", kernel.ToMechanism(second.GetMechanism()).GetInterfaceName())
	waitCount(t, nsc, "msg=connected", 2)

	// nsm-2 goes, nsm-3 comes: the endpoint sees the Close of one, the Request of the other, and
	// nothing of nsm-1 (the monitor's next events are these two, in this order).
	writeServices(t, file, "kernel://icmp-responder/nsm-1, kernel://icmp-responder/nsm-3")
	require.Contains(t, m.next(networkservice.ConnectionEventType_DELETE), second.GetId())
	third := one(t, m.next(networkservice.ConnectionEventType_UPDATE))
	require.Equal(t, "nsm-3", kernel.ToMechanism(third.GetMechanism()).GetInterfaceName())
	waitCount(t, nsc, `msg="services changed" cmd=cmd-nsc closing="kernel://icmp-responder/nsm-2?app=two" requesting=kernel://icmp-responder/nsm-3`, 1)
	waitCount(t, nsc, "msg=connected", 3)

	// Bad lists, and no file at all: each an ERROR once, and no change.
	for i, bad := range []string{
		"kernel://icmp-responder/nsm-1,memif://icmp-responder/nsm-4",
		"kernel://icmp-responder/nsm-1,kernel://icmp-responder/nsm-1",
		"",
	} {
		writeServices(t, file, bad)
		waitCount(t, nsc, `level=ERROR msg="the new list of services is not valid; keeping the services the client has"`, i+1)
	}
	// slog quotes the error, and escapes the quotes in it.
	require.Contains(t, nsc.Stderr(), `item 2 \"memif://icmp-responder/nsm-4\": mechanism MEMIF is not supported by this client; use kernel://`)
	require.Contains(t, nsc.Stderr(), `item 2 \"kernel://icmp-responder/nsm-1\": interface nsm-1 is taken by another URL`)
	require.Contains(t, nsc.Stderr(), file+`: \"\": no URL; give at least one`)
	require.NoError(t, os.Remove(file))
	waitCount(t, nsc, "no such file or directory", 1)

	// The file back as it was, then a SIGHUP: nothing to do either time.
	writeServices(t, file, "kernel://icmp-responder/nsm-1,kernel://icmp-responder/nsm-3")
	waitCount(t, nsc, `msg="services unchanged"`, 1)
	nsc.Signal(syscall.SIGHUP)
	waitCount(t, nsc, `msg="SIGHUP: reading the list of services again"`, 1)
	waitCount(t, nsc, `msg="services unchanged"`, 2)
	require.Equal(t, 3, strings.Count(nsc.Stderr(), "msg=connected"), "no service was asked for again")

	require.Zero(t, nsc.Stop())
	closed := map[string]bool{}
	for range 2 {
		for id := range m.next(networkservice.ConnectionEventType_DELETE) {
			closed[id] = true
		}
	}
	require.Equal(t, map[string]bool{first.GetId(): true, third.GetId(): true}, closed)
}

// refused is the start of the line of a service whose Request failed.
const refused = `level=ERROR msg="could not request a service of the list; asking again after the wait, at SIGHUP or at the next change of the list" cmd=cmd-nsc service=`

// TestNewServiceRefusedKeepsTheOthers: a service added while the client runs that its endpoint
// refuses is logged, the others stay, and a SIGHUP asks for it again at once, its wait starting
// anew (the client's own tries log longer waits).
func TestNewServiceRefusedKeepsTheOthers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	m, file, nsc, first := startFollowing(t, ctx)

	writeServices(t, file, "kernel://icmp-responder/nsm-1,kernel://broken/nsm-2")
	waitCount(t, nsc, refused+"kernel://broken/nsm-2 wait=1s", 1)
	require.Contains(t, nsc.Stderr(), "test endpoint: broken is broken")
	nsc.Signal(syscall.SIGHUP)
	waitCount(t, nsc, `msg="services changed" cmd=cmd-nsc closing="" requesting=kernel://broken/nsm-2`, 2)
	waitCount(t, nsc, refused+"kernel://broken/nsm-2 wait=1s", 2)

	require.Zero(t, nsc.Stop())
	require.Contains(t, m.next(networkservice.ConnectionEventType_DELETE), first.GetId(), "the first connection lived to the end")
}

// TestRefusedServiceIsAskedAgain: a service added while the client runs that its endpoint
// refuses at first is asked for again by the client on its own, with no SIGHUP nor change of the
// list, after a wait that doubles at each failure, until it is connected; the service that stayed
// sees no Request meanwhile. On Kubernetes nobody may ever change the list again.
func TestRefusedServiceIsAskedAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	m, file, nsc, first := startFollowing(t, ctx)

	writeServices(t, file, "kernel://icmp-responder/nsm-1,kernel://flaky/nsm-2")
	// The endpoint's next event is flaky's connection: nothing of nsm-1 before it.
	second := one(t, m.next(networkservice.ConnectionEventType_UPDATE))
	require.Equal(t, "flaky", second.GetNetworkService())
	waitCount(t, nsc, "msg=connected", 2)
	stderr := nsc.Stderr()
	require.Equal(t, 1, strings.Count(stderr, `msg="services changed"`), "the list was read once:\n%s", stderr)
	require.Equal(t, flakyRefusals, strings.Count(stderr, refused), "one line per failure:\n%s", stderr)
	require.Contains(t, stderr, refused+"kernel://flaky/nsm-2 wait=1s")
	require.Contains(t, stderr, refused+"kernel://flaky/nsm-2 wait=2s")
	require.Contains(t, stderr, "test endpoint: flaky is not ready")

	require.Zero(t, nsc.Stop())
	closed := map[string]bool{}
	for range 2 { // DELETEs only: an UPDATE would be a Request of nsm-1 (or nsm-2) after it was made
		for id := range m.next(networkservice.ConnectionEventType_DELETE) {
			closed[id] = true
		}
	}
	require.Equal(t, map[string]bool{first.GetId(): true, second.GetId(): true}, closed)
}

// startFollowing starts a client following a list file that holds one service, and returns the
// endpoint's monitor, the file, the client and its connection, once connected.
func startFollowing(t *testing.T, ctx context.Context) (*monitor, string, *cmdtest.Process, *networkservice.Connection) {
	t.Helper()
	u := serveEndpoint(t)
	m := watch(t, ctx, u)
	file := filepath.Join(cmdtest.TempDir(t), "services")
	writeServices(t, file, "kernel://icmp-responder/nsm-1")
	cmd, args := clientCommand()
	nsc := cmdtest.Start(t, cmd, []string{"NSM_CONNECT_TO=" + u.String(), "NSM_NETWORK_SERVICES_FILE=" + file}, args...)
	first := one(t, m.next(networkservice.ConnectionEventType_UPDATE))
	waitCount(t, nsc, "msg=connected", 1)
	return m, file, nsc, first
}

// TestSIGHUPWithoutAFile: without NSM_NETWORK_SERVICES_FILE there is nothing to read again; the
// client says so and goes on (Go's default for SIGHUP would end it).
func TestSIGHUPWithoutAFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	u := serveEndpoint(t)
	m := watch(t, ctx, u)
	cmd, args := clientCommand()
	nsc := cmdtest.Start(t, cmd, []string{"NSM_CONNECT_TO=" + u.String(), "NSM_NETWORK_SERVICES=kernel://icmp-responder/nsm-1"}, args...)
	conn := one(t, m.next(networkservice.ConnectionEventType_UPDATE))
	waitCount(t, nsc, "msg=connected", 1)
	nsc.Signal(syscall.SIGHUP)
	waitCount(t, nsc, `level=WARN msg="SIGHUP: nothing to read again: NSM_NETWORK_SERVICES_FILE is not set`, 1)
	require.Zero(t, nsc.Stop())
	require.Contains(t, m.next(networkservice.ConnectionEventType_DELETE), conn.GetId())
}

// FuzzDiff: for any two lists the client would take, closing what diff says is gone and
// requesting what it says is added leaves exactly the new list, and a URL kept is in neither.
func FuzzDiff(f *testing.F) {
	f.Add("kernel://a/x,kernel://b/y", "kernel://a/x,kernel://c/z")
	f.Add("kernel://a,kernel://b", "kernel://b")
	f.Add("kernel://a/x?p=1&q=2", "a/x?q=2&p=1")
	f.Fuzz(func(t *testing.T, before, after string) {
		var have, want serviceURLs
		if have.Decode(before) != nil || want.Decode(after) != nil {
			return
		}
		gone, added := diff(have, want)
		held := map[string]bool{}
		for _, u := range have {
			held[u.String()] = true
		}
		for _, u := range gone {
			require.True(t, held[u.String()], "%s is gone but was not held", u)
			delete(held, u.String())
		}
		for _, u := range added {
			require.False(t, held[u.String()], "%s is added but is held", u)
			held[u.String()] = true
		}
		wanted := map[string]bool{}
		for _, u := range want {
			wanted[u.String()] = true
		}
		require.Equal(t, wanted, held)
	})
}
