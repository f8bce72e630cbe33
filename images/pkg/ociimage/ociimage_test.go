package ociimage_test

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/images/pkg/ociimage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var created = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func config() ociimage.Config {
	return ociimage.Config{Entrypoint: []string{"/bin/app"}, Env: []string{"PATH=/bin"}, OS: "linux", Architecture: "amd64", Created: created, CreatedBy: "test"}
}

// source writes content to a file whose own mode and time must not reach the image.
func source(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "src")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	require.NoError(t, os.Chtimes(p, time.Now(), time.Now()))
	return p
}

type entry struct {
	name     string
	typeflag byte
	mode     int64
	content  string
}

// entries reads the image's only layer, checking what every entry must share.
func entries(t *testing.T, img v1.Image) []entry {
	t.Helper()
	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer func() { _ = rc.Close() }()
	var got []entry
	for tr := tar.NewReader(rc); ; {
		hdr, err := tr.Next()
		if err == io.EOF {
			return got
		}
		require.NoError(t, err)
		require.Zero(t, hdr.Uid, hdr.Name)
		require.Zero(t, hdr.Gid, hdr.Name)
		require.Empty(t, hdr.Uname+hdr.Gname, hdr.Name)
		require.True(t, hdr.ModTime.Equal(created), "%s: time %v", hdr.Name, hdr.ModTime)
		content, err := io.ReadAll(tr)
		require.NoError(t, err)
		got = append(got, entry{hdr.Name, hdr.Typeflag, hdr.Mode, string(content)})
	}
}

func TestNew(t *testing.T) {
	app, probe := source(t, "app binary"), source(t, "probe binary")
	files := []ociimage.File{ // not in order
		{Path: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Path: "bin/probe", Mode: 0o755, Source: probe},
		{Path: "bin", Mode: fs.ModeDir | 0o755},
		{Path: "bin/app", Mode: 0o755, Source: app},
		{Path: "etc/secret", Mode: fs.ModeSetuid | fs.ModeSetgid | 0o400, Source: app},
		{Path: "etc", Mode: fs.ModeDir | 0o700},
	}
	img, err := ociimage.New(files, config())
	require.NoError(t, err)

	require.Equal(t, []entry{
		{"bin/", tar.TypeDir, 0o755, ""},
		{"bin/app", tar.TypeReg, 0o755, "app binary"},
		{"bin/probe", tar.TypeReg, 0o755, "probe binary"},
		{"etc/", tar.TypeDir, 0o700, ""},
		{"etc/secret", tar.TypeReg, 0o6400, "app binary"},
		{"tmp/", tar.TypeDir, 0o1777, ""},
	}, entries(t, img))

	cf, err := img.ConfigFile()
	require.NoError(t, err)
	require.Equal(t, []string{"/bin/app"}, cf.Config.Entrypoint)
	require.Equal(t, []string{"PATH=/bin"}, cf.Config.Env)
	require.Equal(t, "linux", cf.OS)
	require.Equal(t, "amd64", cf.Architecture)
	require.True(t, cf.Created.Equal(created))
	require.Len(t, cf.History, 1)
	require.True(t, cf.History[0].Created.Equal(created))
	require.Equal(t, "test", cf.History[0].CreatedBy)

	// The same input in another order, from other copies of the sources, is the same image;
	// another time is another image.
	copies := append([]ociimage.File(nil), files...)
	for i, j := 0, len(copies)-1; i < j; i, j = i+1, j-1 {
		copies[i], copies[j] = copies[j], copies[i]
	}
	copies[1].Source = source(t, "app binary")
	again, err := ociimage.New(copies, config())
	require.NoError(t, err)
	requireDigest(t, digest(t, img), again)
	later := config()
	later.Created = created.Add(time.Second)
	other, err := ociimage.New(files, later)
	require.NoError(t, err)
	require.NotEqual(t, digest(t, img), digest(t, other))
}

func digest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	require.NoError(t, err)
	return d
}

func requireDigest(t *testing.T, want v1.Hash, img v1.Image) {
	t.Helper()
	require.Equal(t, want, digest(t, img))
}

func TestWriteReadsBackWithTheSameDigest(t *testing.T) {
	img, err := ociimage.New([]ociimage.File{
		{Path: "bin", Mode: fs.ModeDir | 0o755},
		{Path: "bin/app", Mode: 0o755, Source: source(t, "app binary")},
	}, config())
	require.NoError(t, err)
	tag, err := name.NewTag("example.test/vw/app:v1.2.3")
	require.NoError(t, err)
	dir := t.TempDir()
	file := filepath.Join(dir, "app.tar")
	require.NoError(t, ociimage.Write(file, tag, img))
	first, err := os.ReadFile(file)
	require.NoError(t, err)

	back, err := tarball.ImageFromPath(file, nil)
	require.NoError(t, err)
	requireDigest(t, digest(t, img), back)
	manifest, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(file) })
	require.NoError(t, err)
	require.Len(t, manifest, 1)
	require.Equal(t, []string{"example.test/vw/app:v1.2.3"}, manifest[0].RepoTags)

	// Written again, byte for byte the same, and nothing else is left in the folder.
	require.NoError(t, ociimage.Write(file, tag, img))
	second, err := os.ReadFile(file)
	require.NoError(t, err)
	require.True(t, bytes.Equal(first, second), "the tarball differs when written twice")
	names, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, names, 1)

	compressed, uncompressed, err := ociimage.Sizes(img)
	require.NoError(t, err)
	m, err := img.Manifest()
	require.NoError(t, err)
	rawManifest, err := img.RawManifest()
	require.NoError(t, err)
	require.Equal(t, int64(len(rawManifest))+m.Config.Size+m.Layers[0].Size, compressed)
	require.Equal(t, int64(5*512), uncompressed, "two headers, one data block, two end blocks")
}

func TestNewRefusesBadInput(t *testing.T) {
	src := source(t, "x")
	bin := ociimage.File{Path: "bin", Mode: fs.ModeDir | 0o755}
	for _, tc := range []struct {
		name  string
		files []ociimage.File
		cfg   func(*ociimage.Config)
		want  string
	}{
		{name: "absolute", files: []ociimage.File{{Path: "/bin", Mode: fs.ModeDir | 0o755}}, want: `"/bin" is not a clean path`},
		{name: "dot dot", files: []ociimage.File{bin, {Path: "bin/../x", Mode: 0o755, Source: src}}, want: `"bin/../x" is not a clean path`},
		{name: "root", files: []ociimage.File{{Path: ".", Mode: fs.ModeDir | 0o755}}, want: `"." is not a clean path`},
		{name: "empty", files: []ociimage.File{{Path: "", Mode: 0o755, Source: src}}, want: `"" is not a clean path`},
		{name: "twice", files: []ociimage.File{bin, bin}, want: `"bin" is listed twice`},
		{name: "no parent", files: []ociimage.File{{Path: "bin/app", Mode: 0o755, Source: src}}, want: `directory "bin", which is not listed`},
		{name: "parent is a file", files: []ociimage.File{{Path: "bin", Mode: 0o755, Source: src}, {Path: "bin/app", Mode: 0o755, Source: src}}, want: `directory "bin", which is not listed`},
		{name: "directory with a source", files: []ociimage.File{{Path: "bin", Mode: fs.ModeDir | 0o755, Source: src}}, want: `directory "bin" has a source`},
		{name: "symlink", files: []ociimage.File{{Path: "sh", Mode: fs.ModeSymlink | 0o777, Source: src}}, want: `only regular files and directories`},
		{name: "missing source", files: []ociimage.File{{Path: "app", Mode: 0o755, Source: src + ".missing"}}, want: `file "app": open`},
		{name: "no entrypoint", files: []ociimage.File{bin}, cfg: func(c *ociimage.Config) { c.Entrypoint = nil }, want: "needs an entrypoint"},
		{name: "no architecture", files: []ociimage.File{bin}, cfg: func(c *ociimage.Config) { c.Architecture = "" }, want: "needs an entrypoint, an OS and an architecture"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config()
			if tc.cfg != nil {
				tc.cfg(&c)
			}
			_, err := ociimage.New(tc.files, c)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
