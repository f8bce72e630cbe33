package fdpass_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/tools/fdpass"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCheck(t *testing.T) {
	for u, ok := range map[string]bool{
		"inode://4/4026531992":           true,
		"inode://4/":                     false,
		"inode://x/1":                    false,
		"inode:///1":                     false,
		"inode://4/1?x=1":                false,
		"file:///proc/1/ns/net":          false,
		"inode://4/-1":                   false,
		"inode://user@4/1":               false,
		"inode://4/1#fragment":           false,
		"inode://4/1/2":                  false,
		"":                               false,
		"inode://18446744073709551615/1": true,
	} {
		err := fdpass.Check(u)
		if ok {
			require.NoError(t, err, u)
			continue
		}
		require.Equal(t, codes.InvalidArgument, status.Code(err), u)
	}
}

func FuzzCheck(f *testing.F) {
	for _, seed := range []string{"inode://4/4026531992", "inode://4/", "file:///x", "%zz", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, u string) {
		if fdpass.Check(u) == nil && !fdpass.IsURL(u) {
			t.Fatalf("%q passes Check but is not an inode URL", u)
		}
	})
}

// TestURLOfAndPathURLAgree: a file opened and its path name the same inode URL.
func TestURLOfAndPathURLAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	byFile, err := fdpass.URLOf(f)
	require.NoError(t, err)
	byPath, err := fdpass.PathURL(path)
	require.NoError(t, err)
	require.Equal(t, byPath, byFile)
	require.NoError(t, fdpass.Check(byFile))
}

// TestFilesCloseWhatTheyDrop: a replaced, retained-away or closed file is closed.
func TestFilesCloseWhatTheyDrop(t *testing.T) {
	dir := t.TempDir()
	open := func(name string) *os.File {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, nil, 0o600))
		f, err := os.Open(path)
		require.NoError(t, err)
		return f
	}
	closed := func(f *os.File) bool {
		_, err := f.Stat()
		return errors.Is(err, os.ErrClosed)
	}
	files := fdpass.NewFiles()
	a, b, c := open("a"), open("b"), open("c")
	files.Put("inode://1/1", a)
	files.Put("inode://1/1", b)
	require.True(t, closed(a), "replaced")
	files.Put("inode://1/2", c)
	files.Retain(func(u string) bool { return u == "inode://1/2" })
	require.True(t, closed(b), "retained away")
	require.Same(t, c, files.Get("inode://1/2"))
	require.Equal(t, 1, files.Len())
	files.Close()
	require.True(t, closed(c))
	require.Zero(t, files.Len())
}

// TestReceiveWithoutAPeerIsPermissionDenied: a caller that cannot pass descriptors (TCP) holds
// nothing it could hand over.
func TestReceiveWithoutAPeerIsPermissionDenied(t *testing.T) {
	_, err := fdpass.Receive(context.Background(), fdpass.Peer(context.Background()), "inode://4/1")
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	_, err = fdpass.Receive(context.Background(), nil, "file:///proc/1/ns/net")
	require.Equal(t, codes.InvalidArgument, status.Code(err))
}

func TestFromContext(t *testing.T) {
	require.Nil(t, fdpass.FromContext(context.Background()), "a request that started here")
	files := fdpass.NewFiles()
	require.Same(t, files, fdpass.FromContext(fdpass.WithFiles(context.Background(), files)))
}
