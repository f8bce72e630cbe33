package nsfile_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOpen(t *testing.T) {
	ns, name := nstest.New(t)
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	require.NoError(t, os.WriteFile(regular, nil, 0o600))
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, unix.Mkfifo(fifo, 0o600))

	tests := []struct {
		name string
		url  string
		want netns.NsHandle // compared by inode when code is OK
		code codes.Code
		msg  string
	}{
		{name: "named namespace", url: nstest.URL(name), want: ns},
		{name: "process namespace", url: fmt.Sprintf("file:///proc/%d/ns/net", os.Getpid()), want: self(t)},
		{name: "localhost host", url: "file://localhost" + "/var/run/netns/" + name, want: ns},
		{name: "inode URL", url: "inode://4/4026531992", code: codes.InvalidArgument,
			msg: `nsfile: netns URL "inode://4/4026531992" names a namespace passed as a descriptor, not a path; open the received file with FromFile`},
		{name: "other scheme", url: "unix:///var/run/netns/x", code: codes.InvalidArgument,
			msg: `nsfile: netns URL "unix:///var/run/netns/x" has scheme "unix"; want file:///proc/<pid>/ns/net or file:///var/run/netns/<name>`},
		{name: "bare path", url: "/var/run/netns/x", code: codes.InvalidArgument},
		{name: "remote host", url: "file://node-1/proc/1/ns/net", code: codes.InvalidArgument,
			msg: `nsfile: netns URL "file://node-1/proc/1/ns/net" names host "node-1"; want file:///<absolute path>`},
		{name: "unclean path", url: "file:///proc/1/ns/../ns/net", code: codes.InvalidArgument},
		{name: "query", url: "file:///proc/1/ns/net?x=1", code: codes.InvalidArgument},
		{name: "missing file", url: "file:///proc/999999999/ns/net", code: codes.NotFound},
		{name: "regular file", url: "file://" + regular, code: codes.InvalidArgument,
			msg: `nsfile: file://` + regular + ` is not a network namespace: it is not a namespace file (nsfs)`},
		{name: "fifo does not block", url: "file://" + fifo, code: codes.InvalidArgument},
		{name: "namespace of another kind", url: "file:///proc/self/ns/uts", code: codes.InvalidArgument,
			msg: "nsfile: file:///proc/self/ns/uts is not a network namespace: it is a namespace of another kind (CLONE flag 0x4000000)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := nsfile.Open(tt.url)
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			if tt.code != codes.OK {
				require.False(t, got.IsOpen())
				if tt.msg != "" {
					require.EqualError(t, err, tt.msg)
				}
				return
			}
			defer func() { _ = got.Close() }()
			require.True(t, got.Equal(tt.want), "opened %s, want %s", got.UniqueId(), tt.want.UniqueId())
		})
	}
}

// TestFromFile: a received descriptor, O_PATH as NSM's clients send it or opened for reading,
// gives its namespace; one of anything else is refused, and nothing blocks.
func TestFromFile(t *testing.T) {
	ns, name := nstest.New(t)
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	require.NoError(t, os.WriteFile(regular, nil, 0o600))
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, unix.Mkfifo(fifo, 0o600))
	for _, tt := range []struct {
		name  string
		path  string
		flags int
		code  codes.Code
	}{
		{"O_PATH namespace", "/var/run/netns/" + name, unix.O_PATH, codes.OK},
		{"namespace opened for reading", "/var/run/netns/" + name, unix.O_RDONLY, codes.OK},
		{"regular file", regular, unix.O_PATH, codes.InvalidArgument},
		{"fifo", fifo, unix.O_PATH, codes.InvalidArgument},
		{"namespace of another kind", "/proc/self/ns/uts", unix.O_PATH, codes.InvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := os.OpenFile(tt.path, tt.flags|unix.O_CLOEXEC, 0)
			require.NoError(t, err)
			defer f.Close()
			got, err := nsfile.FromFile(f, "inode://1/2")
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			if tt.code != codes.OK {
				require.Contains(t, err.Error(), "inode://1/2", "the error names the URL")
				return
			}
			defer func() { _ = got.Close() }()
			require.True(t, nsfile.Same(got, ns))
			require.False(t, nsfile.Same(got, self(t)))
		})
	}
}

func self(t *testing.T) netns.NsHandle {
	ns, err := netns.GetFromPid(os.Getpid())
	require.NoError(t, err)
	t.Cleanup(func() { _ = ns.Close() })
	return ns
}

func TestDo(t *testing.T) {
	ns, _ := nstest.New(t)
	var inside netns.NsHandle
	err := nsfile.Do(ns, func() (err error) {
		inside, err = netns.Get()
		return err
	})
	require.NoError(t, err)
	defer func() { _ = inside.Close() }()
	require.True(t, inside.Equal(ns), "fn ran in the namespace")

	boom := errors.New("boom")
	require.ErrorIs(t, nsfile.Do(ns, func() error { return boom }), boom, "fn's error comes back")
	require.PanicsWithValue(t, "oops", func() { _ = nsfile.Do(ns, func() error { panic("oops") }) }, "fn's panic comes back")

	err = nsfile.Do(netns.NsHandle(1<<20), func() error { return nil })
	require.Equal(t, codes.InvalidArgument, status.Code(err), "a closed handle: %v", err)
}

// TestDoLeavesOtherThreadsAlone: whatever ran in the namespace, every thread of the process
// is in the process's own namespace afterwards.
func TestDoLeavesOtherThreadsAlone(t *testing.T) {
	ns, _ := nstest.New(t)
	for range 20 {
		require.NoError(t, nsfile.Do(ns, func() error { return nil }))
	}
	home := current(t)
	tasks, err := os.ReadDir("/proc/self/task")
	require.NoError(t, err)
	for _, task := range tasks {
		link, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread exited meanwhile
		}
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("net:[%d]", inode(t, home)), link, "thread %s", task.Name())
	}
}

// current is the namespace of the calling thread, where the test runs.
func current(t *testing.T) netns.NsHandle {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns, err := netns.Get()
	require.NoError(t, err)
	t.Cleanup(func() { _ = ns.Close() })
	return ns
}

func inode(t *testing.T, ns netns.NsHandle) uint64 {
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(int(ns), &st))
	return st.Ino
}

// FuzzPath: any string gives a clean absolute path or an error with a status code, never a panic.
func FuzzPath(f *testing.F) {
	for _, seed := range []string{"file:///proc/1/ns/net", "file:///var/run/netns/a", "inode://4/4026531992", "file://x/y", "", "file:", "%zz"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, u string) {
		path, err := nsfile.Path(u)
		if err != nil {
			require.Equal(t, codes.InvalidArgument, status.Code(err))
			return
		}
		require.True(t, filepath.IsAbs(path) && filepath.Clean(path) == path, "path %q", path)
	})
}
