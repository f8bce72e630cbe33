package hopurl_test

import (
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/tools/hopurl"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mustParse(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	require.NoError(t, err)
	return u
}

func TestTarget(t *testing.T) {
	long := "unix:///" + strings.Repeat("d", 107)
	tests := []struct {
		name    string
		url     string
		want    string
		wantErr string // part of the message; empty: no error
	}{
		{name: "unix socket", url: "unix:///var/lib/networkservicemesh/nsm.io.sock", want: "unix:///var/lib/networkservicemesh/nsm.io.sock"},
		{name: "unix path with a space", url: "unix:///tmp/a%20b.sock", want: "unix:///tmp/a%20b.sock"},
		{name: "tcp ipv4", url: "tcp://127.0.0.1:5001", want: "127.0.0.1:5001"},
		{name: "tcp ipv6", url: "tcp://[::1]:5001", want: "[::1]:5001"},
		{name: "tcp ipv6 full", url: "tcp://[fd00:0:0::2]:5001", want: "[fd00:0:0::2]:5001"},
		{name: "tcp trailing slash", url: "tcp://10.0.0.2:5001/", want: "10.0.0.2:5001"},
		{name: "tcp host name", url: "tcp://registry:5002", want: "dns:///registry:5002"},
		{name: "tcp host name like a grpc scheme", url: "tcp://unix:5002", want: "dns:///unix:5002"},
		{name: "tcp scoped ipv6", url: "tcp://[fe80::1%25eth0]:5001", want: "dns:///%5Bfe80::1%25eth0%5D:5001"},

		{name: "http", url: "http://127.0.0.1:80", wantErr: `scheme "http" is not supported; use unix:///path/to/socket or tcp://host:port`},
		{name: "no scheme", url: "127.0.0.1:5001", wantErr: "first path segment"}, // url.Parse's own error; see below
		{name: "bare path", url: "/var/run/nsm.sock", wantErr: "has no scheme"},
		{name: "unix two slashes", url: "unix://var/run/nsm.sock", wantErr: `has host "var"; a unix URL has three slashes: unix:///var/run/nsm.sock`},
		{name: "unix relative", url: "unix:nsm.sock", wantErr: "is relative"},
		{name: "unix no path", url: "unix:///", wantErr: "has no socket path"},
		{name: "unix directory", url: "unix:///var/run/", wantErr: "names a directory"},
		{name: "unix too long", url: long, wantErr: "socket path is 108 bytes, Linux allows 107"},
		{name: "unix query", url: "unix:///a.sock?x=1", wantErr: "has a query"},
		{name: "tcp no port", url: "tcp://127.0.0.1", wantErr: "has no port"},
		{name: "tcp port zero", url: "tcp://127.0.0.1:0", wantErr: `port "0" is not a port number`},
		{name: "tcp port too big", url: "tcp://[::1]:65536", wantErr: `port "65536" is not a port number`},
		{name: "tcp no host", url: "tcp://:5001", wantErr: "has no host"},
		{name: "tcp path", url: "tcp://127.0.0.1:5001/nsm", wantErr: `has path "/nsm"`},
		{name: "tcp user", url: "tcp://me@127.0.0.1:5001", wantErr: "has user information"},
		{name: "tcp fragment", url: "tcp://127.0.0.1:5001#x", wantErr: "has a fragment"},
		{name: "tcp opaque", url: "tcp:127.0.0.1:5001", wantErr: "has no host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				require.Contains(t, err.Error(), tt.wantErr, "only a want of url.Parse's own error may fail parsing")
				return
			}
			got, err := hopurl.Target(u)
			if tt.wantErr == "" {
				require.NoError(t, err)
				require.Equal(t, tt.want, got)
				return
			}
			require.Error(t, err)
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			require.Contains(t, err.Error(), tt.wantErr)
			require.Contains(t, err.Error(), tt.url[:min(len(tt.url), 20)], "the message names the URL")
		})
	}
}

func TestTargetNil(t *testing.T) {
	_, err := hopurl.Target(nil)
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, err.Error(), "missing")
}

func TestErrorKeepsCodeWhenWrapped(t *testing.T) {
	_, err := hopurl.Target(mustParse(t, "udp://127.0.0.1:53"))
	wrapped := errors.Join(err) // any wrapper: grpc finds the status through Unwrap
	require.Equal(t, codes.InvalidArgument, status.Code(wrapped))
	var herr *hopurl.Error
	require.ErrorAs(t, wrapped, &herr)
	require.Equal(t, "udp://127.0.0.1:53", herr.URL)
}

func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func unixURL(path string) *url.URL { return &url.URL{Scheme: hopurl.Unix, Path: path} }

func TestListenUnix(t *testing.T) {
	dir := tempDir(t)
	path := filepath.Join(dir, "sub", "nse.sock")

	ln, err := hopurl.Listen(unixURL(path))
	require.NoError(t, err, "the missing directory is made")
	require.Equal(t, unixURL(path), hopurl.FromAddr(ln.Addr()))

	_, err = hopurl.Listen(unixURL(path))
	require.ErrorContains(t, err, "another process is serving on this socket")

	// A socket file left behind by a process that died: keep the file, drop the listener.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())
	_, err = os.Lstat(path)
	require.NoError(t, err, "the stale socket file is still there")

	ln, err = hopurl.Listen(unixURL(path))
	require.NoError(t, err, "a stale socket is replaced")
	c, err := net.Dial("unix", path)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.NoError(t, ln.Close())
}

func TestListenUnixRefusesRegularFile(t *testing.T) {
	path := filepath.Join(tempDir(t), "notes.txt")
	require.NoError(t, os.WriteFile(path, []byte("keep me"), 0o600))
	_, err := hopurl.Listen(unixURL(path))
	require.ErrorContains(t, err, "exists and is not a socket")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "keep me", string(data))
}

func TestListenTCP(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "[::1]"} {
		t.Run(host, func(t *testing.T) {
			ln, err := hopurl.Listen(mustParse(t, "tcp://"+host+":0"))
			require.NoError(t, err)
			defer func() { require.NoError(t, ln.Close()) }()
			u := hopurl.FromAddr(ln.Addr())
			require.Equal(t, hopurl.TCP, u.Scheme)
			target, err := hopurl.Target(u)
			require.NoError(t, err)
			c, err := net.Dial("tcp", target)
			require.NoError(t, err)
			require.NoError(t, c.Close())
		})
	}
}

func TestListenRejects(t *testing.T) {
	for _, s := range []string{"http://127.0.0.1:0", "tcp://127.0.0.1", "unix:x.sock"} {
		_, err := hopurl.Listen(mustParse(t, s))
		require.Equal(t, codes.InvalidArgument, status.Code(err), s)
	}
}

// FuzzTarget checks that Target never panics, answers InvalidArgument when it refuses, and
// returns targets that gRPC accepts and that keep the URL's socket path or port.
func FuzzTarget(f *testing.F) {
	for _, s := range []string{
		"unix:///var/lib/networkservicemesh/nsm.io.sock",
		"unix:///tmp/a%20b.sock",
		"unix://host/path",
		"unix:relative",
		"unix:///",
		"tcp://127.0.0.1:5001",
		"tcp://[::1]:5001",
		"tcp://[fe80::1%25eth0]:5001",
		"tcp://registry.example:5002",
		"tcp://unix:5002",
		"tcp://:5001",
		"tcp://127.0.0.1:0",
		"tcp://127.0.0.1:99999",
		"tcp://u:p@127.0.0.1:1/x?y#z",
		"http://example.com",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		target, err := hopurl.Target(u)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Target(%q) error %v is not InvalidArgument", s, err)
			}
			return
		}
		switch u.Scheme {
		case hopurl.Unix:
			if got := mustParse(t, target); got.Scheme != "unix" || got.Path != u.Path {
				t.Fatalf("Target(%q) = %q loses the socket path", s, target)
			}
		case hopurl.TCP:
			if !strings.HasSuffix(target, ":"+strings.TrimLeft(u.Port(), "0")) {
				t.Fatalf("Target(%q) = %q loses the port", s, target)
			}
		default:
			t.Fatalf("Target(%q) accepted scheme %q", s, u.Scheme)
		}
		cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatalf("Target(%q) = %q, which gRPC refuses: %v", s, target, err)
		}
		_ = cc.Close()
	})
}
