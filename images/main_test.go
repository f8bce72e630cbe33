package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	epoch   = 1700000000
	repo    = "example.test/vw"
	version = "v0.0.0-test"
)

// servesGRPC is what discover must find for the cmds known when this test was written; cmds
// added later are checked against what discover says of them.
var servesGRPC = map[string]bool{
	"cmd-forwarder-kernel":   true,
	"cmd-nse-icmp-responder": true,
	"cmd-nsmgr":              true,
	"cmd-registry-memory":    true,
	"cmd-registry-k8s":       true,
	"cmd-nsc":                false,
	"cmd-vwctl":              false,
}

// TestImages builds the image of every cmd twice, as `make images` does, from two copies of the
// workspace's source in two folders, and checks each tarball: byte for byte the same both times,
// its tag, config, the files of its layer, its size, that its programs run outside the workspace
// and hold no path of the build machine, and that a registry takes it and gives back the same
// digest.
func TestImages(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", strconv.Itoa(epoch))
	ctx := t.Context()
	ws := filepath.Dir(goEnv(t, "GOWORK"))
	// The copies are one snapshot of what git tracks or would (the workspace may change while the
	// test runs), and building from two folders shows that no path of the build reaches an image.
	list, err := git(ctx, ws, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	require.NoError(t, err)
	files := strings.Split(list, "\x00")
	srcs := []string{t.TempDir(), t.TempDir()}
	copyFiles(t, ws, srcs[0], files)
	copyFiles(t, srcs[0], srcs[1], files)

	cmds, err := discover(ctx, srcs[0])
	require.NoError(t, err)
	for n := range servesGRPC {
		if n == "cmd-registry-k8s" {
			continue // under way when this was written
		}
		require.True(t, hasCmd(cmds, n), "discover found no %s in %v", n, cmds)
	}

	// The builder runs as `make images` runs it: a program of its own, not under the race
	// detector, which would make compressing the layers take minutes.
	builder := filepath.Join(t.TempDir(), "images")
	_, err = goOutput(ctx, "", nil, "build", "-o", builder, ".")
	require.NoError(t, err)
	for _, src := range srcs {
		out := runIn(t, src, builder, os.Environ(), 10*time.Minute, "-repo", repo, "-version", version)
		require.Equal(t, len(cmds), strings.Count(out, "\n"), out)
		t.Log("\n" + out)
	}
	dirs := []string{filepath.Join(srcs[0], ".build", "images"), filepath.Join(srcs[1], ".build", "images")}

	reg := newRegistry(t)
	buildPaths := []string{ws, srcs[0], srcs[1], goEnv(t, "GOMODCACHE"), goEnv(t, "GOROOT"), os.TempDir() + "/vw-images"}
	for _, c := range cmds {
		t.Run(c.Name, func(t *testing.T) {
			if want, known := servesGRPC[c.Name]; known {
				require.Equal(t, want, c.ServesGRPC, "discover: does %s serve gRPC?", c.Name)
			}
			file := filepath.Join(dirs[0], c.Name+".tar")
			first, err := os.ReadFile(file)
			require.NoError(t, err)
			second, err := os.ReadFile(filepath.Join(dirs[1], c.Name+".tar"))
			require.NoError(t, err)
			require.True(t, bytes.Equal(first, second), "two builds of %s differ", c.Name)

			img, err := tarball.ImageFromPath(file, nil)
			require.NoError(t, err)
			manifest, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(file) })
			require.NoError(t, err)
			require.Equal(t, []string{repo + "/" + c.Name + ":" + version}, manifest[0].RepoTags)

			cf, err := img.ConfigFile()
			require.NoError(t, err)
			require.Equal(t, []string{"/bin/" + c.Name}, cf.Config.Entrypoint)
			require.Equal(t, []string{"PATH=/bin"}, cf.Config.Env)
			require.Empty(t, cf.Config.User)
			require.Equal(t, "linux", cf.OS)
			require.Equal(t, runtime.GOARCH, cf.Architecture)
			require.Equal(t, int64(epoch), cf.Created.Unix())

			want := []string{"bin/ d755", "bin/" + c.Name + " 755", "tmp/ d1777"}
			if c.ServesGRPC {
				want = []string{"bin/ d755", "bin/" + c.Name + " 755", "bin/grpc-health-probe 755", "tmp/ d1777"}
			}
			bins := t.TempDir()
			layer := readLayer(t, img, bins)
			require.Equal(t, want, layer.files)
			require.Equal(t, cf.RootFS.DiffIDs, []v1.Hash{layer.diffID}, "the config names another layer")

			// What a registry stores: manifest, config and the compressed layer.
			rawManifest, err := img.RawManifest()
			require.NoError(t, err)
			m := manifestOf(t, img)
			compressed := int64(len(rawManifest)) + m.Config.Size + m.Layers[0].Size
			require.LessOrEqual(t, compressed, int64(maxCompressed), "%s is too big", c.Name)
			t.Logf("%s: %s compressed, %s unpacked", c.Name, mb(compressed), mb(layer.size))

			programs := []string{c.Name}
			if c.ServesGRPC {
				programs = append(programs, probe)
			}
			for _, bin := range programs {
				content, err := os.ReadFile(filepath.Join(bins, bin))
				require.NoError(t, err)
				for _, p := range buildPaths {
					require.False(t, bytes.Contains(content, []byte(p)), "%s holds the build path %s", bin, p)
				}
			}
			// Outside the workspace, with no environment: the binary is static and stands alone.
			usage := runIn(t, bins, filepath.Join(bins, c.Name), nil, time.Minute, "--help")
			require.Contains(t, usage, "NSM_LOG_LEVEL")
			if c.ServesGRPC {
				require.Equal(t, "0.4.63", strings.TrimSpace(runIn(t, bins, filepath.Join(bins, probe), nil, time.Minute, "-version")))
			}
			if c.Name == "cmd-registry-memory" { // serves without root or peers
				probeServing(t, bins, c.Name)
			}

			ref, err := name.NewTag(reg.host + "/vw/" + c.Name + ":" + version)
			require.NoError(t, err)
			require.NoError(t, remote.Write(ref, img, remote.WithTransport(reg.transport)))
			pulled, err := remote.Image(ref, remote.WithTransport(reg.transport))
			require.NoError(t, err)
			require.Equal(t, digest(t, img), digest(t, pulled))
			pulledLayers, err := pulled.Layers()
			require.NoError(t, err)
			require.Len(t, pulledLayers, 1)
			pulledLayer, err := pulledLayers[0].Digest()
			require.NoError(t, err)
			require.Equal(t, manifestOf(t, img).Layers[0].Digest, pulledLayer)
		})
	}
}

func TestDiscover(t *testing.T) {
	ws := t.TempDir()
	write := func(file, content string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(ws, file)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(ws, file), []byte(content), 0o644))
	}
	write("go.work", "go 1.26.8\n\nuse (\n\t./cmd-b\n\t./cmd-a\n\t./cmd-empty\n\t./cmd-lib\n\t./tool\n)\n")
	for _, m := range []string{"cmd-a", "cmd-b", "cmd-empty", "cmd-lib", "tool", "cmd-outside"} {
		write(m+"/go.mod", "module example.test/"+m+"\n\ngo 1.26.8\n")
	}
	for _, m := range []string{"cmd-a", "cmd-b", "tool", "cmd-outside"} {
		write(m+"/main.go", "package main\n\nfunc main() {}\n")
	}
	write("cmd-lib/lib.go", "package lib\n")
	write("cmd-b/sub/main.go", "package main\n\nfunc main() {}\n")

	cmds, err := discover(t.Context(), ws)
	require.NoError(t, err)
	require.Equal(t, []cmd{
		{Name: "cmd-a", ImportPath: "example.test/cmd-a"},
		{Name: "cmd-b", ImportPath: "example.test/cmd-b"},
	}, cmds)
}

func TestRunRefusesBadInput(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", strconv.Itoa(epoch))
	for _, tc := range []struct {
		name  string
		args  []string
		epoch string
		want  string
	}{
		{name: "unknown cmd", args: []string{"cmd-nsmgr", "cmd-nope"}, want: `no cmd "cmd-nope" in the workspace; the cmds are cmd-`},
		{name: "bad version", args: []string{"-version", "v1.0+dirty"}, want: `image name from -repo "ghcr.io/vwire" and -version "v1.0+dirty"`},
		{name: "bad repo", args: []string{"-repo", "Upper/Case"}, want: `image name from -repo "Upper/Case"`},
		{name: "bad epoch", epoch: "yesterday", want: `SOURCE_DATE_EPOCH "yesterday" is not a number of seconds`},
		{name: "unknown flag", args: []string{"-tag", "v1"}, want: "flag provided but not defined: -tag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.epoch != "" {
				t.Setenv("SOURCE_DATE_EPOCH", tc.epoch)
			}
			out := filepath.Join(t.TempDir(), "images")
			var stdout bytes.Buffer
			err := run(t.Context(), append([]string{"-out", out}, tc.args...), &stdout)
			require.ErrorContains(t, err, tc.want)
			require.NoDirExists(t, out, "a refused run wrote nothing")
			require.Empty(t, stdout.String())
		})
	}
}

// TestPrebuilt makes the images of -prebuilt from a folder of static programs (a stand-in, the
// test's own build of a tiny program: what is checked is the image, not SPIRE), only those
// named, and refuses a folder where one is missing or needs a dynamic loader.
func TestPrebuilt(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", strconv.Itoa(epoch))
	src := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, "go.mod"), []byte("module example.test/standin\n\ngo 1.26.8\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nfunc main() { println(\"standin\") }\n"), 0o644))
	dir := t.TempDir()
	_, err := goOutput(t.Context(), src, []string{"GOWORK=off"}, "build", "-o", filepath.Join(dir, "standin"), ".")
	require.NoError(t, err)
	standin, err := os.ReadFile(filepath.Join(dir, "standin"))
	require.NoError(t, err)
	for _, n := range prebuilt {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), standin, 0o755))
	}

	out := filepath.Join(t.TempDir(), "images")
	var stdout bytes.Buffer
	require.NoError(t, run(t.Context(), []string{"-out", out, "-repo", repo, "-version", version, "-prebuilt", dir, "spire-server", "spire-agent"}, &stdout))
	require.Equal(t, 2, strings.Count(stdout.String(), "\n"), stdout.String())
	for _, n := range []string{"spire-server", "spire-agent"} {
		img, err := tarball.ImageFromPath(filepath.Join(out, n+".tar"), nil)
		require.NoError(t, err)
		cf, err := img.ConfigFile()
		require.NoError(t, err)
		require.Equal(t, []string{"/bin/" + n}, cf.Config.Entrypoint)
		require.Equal(t, []string{"PATH=/bin"}, cf.Config.Env)
		bins := t.TempDir()
		require.Equal(t, []string{"bin/ d755", "bin/" + n + " 755", "tmp/ d1777"}, readLayer(t, img, bins).files)
		content, err := os.ReadFile(filepath.Join(bins, n))
		require.NoError(t, err)
		require.True(t, bytes.Equal(standin, content), "the image of %s holds another program", n)
	}
	require.NoFileExists(t, filepath.Join(out, "spire-controller-manager.tar"), "not named, not made")

	t.Run("missing", func(t *testing.T) {
		empty := t.TempDir()
		err := run(t.Context(), []string{"-out", filepath.Join(empty, "images"), "-version", version, "-prebuilt", empty, "spire-server"}, io.Discard)
		require.ErrorContains(t, err, "make spire-bins builds")
		require.NoDirExists(t, filepath.Join(empty, "images"))
	})
	t.Run("dynamic", func(t *testing.T) {
		sh, err := exec.LookPath("sh") // the host's shell: dynamically linked on Debian
		require.NoError(t, err)
		content, err := os.ReadFile(sh)
		require.NoError(t, err)
		dynamic := t.TempDir()
		for _, n := range prebuilt {
			require.NoError(t, os.WriteFile(filepath.Join(dynamic, n), content, 0o755))
		}
		err = run(t.Context(), []string{"-out", filepath.Join(dynamic, "images"), "-version", version, "-prebuilt", dynamic}, io.Discard)
		require.ErrorContains(t, err, "needs a dynamic loader")
		require.NoDirExists(t, filepath.Join(dynamic, "images"))
	})
}

// copyFiles copies files (relative paths; those gone meanwhile are left out) from one folder to
// another.
func copyFiles(t *testing.T, from, to string, files []string) {
	t.Helper()
	for _, f := range files {
		if f == "" {
			continue
		}
		content, err := os.ReadFile(filepath.Join(from, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		require.NoError(t, err)
		info, err := os.Stat(filepath.Join(from, f))
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(to, f)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(to, f), content, info.Mode().Perm()))
	}
}

func hasCmd(cmds []cmd, n string) bool {
	for _, c := range cmds {
		if c.Name == n {
			return true
		}
	}
	return false
}

func goEnv(t *testing.T, key string) string {
	t.Helper()
	v, err := goOutput(t.Context(), "", nil, "env", key)
	require.NoError(t, err)
	require.NotEmpty(t, v, "go env %s", key)
	return v
}

type layer struct {
	files  []string // "name [d]mode"
	size   int64    // of the tar stream
	diffID v1.Hash  // its sha256
}

// readLayer reads the image's only layer in one pass, checking every entry's owner and time, and
// writes the files of bin/ into dir.
func readLayer(t *testing.T, img v1.Image, dir string) layer {
	t.Helper()
	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer func() { _ = rc.Close() }()
	h := sha256.New()
	counted := &countingWriter{w: h}
	tr := tar.NewReader(io.TeeReader(rc, counted))
	var l layer
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		require.Zero(t, hdr.Uid+hdr.Gid, hdr.Name)
		require.Equal(t, int64(epoch), hdr.ModTime.Unix(), hdr.Name)
		kind := ""
		if hdr.Typeflag == tar.TypeDir {
			kind = "d"
		} else {
			require.Equal(t, byte(tar.TypeReg), hdr.Typeflag, hdr.Name)
			require.True(t, strings.HasPrefix(hdr.Name, "bin/"), hdr.Name)
			f, err := os.OpenFile(filepath.Join(dir, filepath.Base(hdr.Name)), os.O_CREATE|os.O_WRONLY, fs.FileMode(hdr.Mode))
			require.NoError(t, err)
			_, err = io.Copy(f, tr)
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}
		l.files = append(l.files, hdr.Name+" "+kind+strconv.FormatInt(hdr.Mode, 8))
	}
	_, err = io.Copy(io.Discard, io.TeeReader(rc, counted)) // what follows the end marker
	require.NoError(t, err)
	l.size, l.diffID = counted.n, v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	return l
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.w.Write(p)
}

// runIn runs program in dir with env (nil: none), and returns what it wrote to
// stdout and stderr; it must exit 0 within the timeout.
func runIn(t *testing.T, dir, program string, env []string, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, program, args...)
	c.Dir, c.Env = dir, append([]string{}, env...)
	out, err := c.CombinedOutput()
	require.NoError(t, err, "%s %v: %s", program, args, out)
	return string(out)
}

// probeServing starts the cmd of bins on a unix socket, as a pod runs it, and asks the image's
// grpc-health-probe as NSM's manifests do until it answers SERVING; then stops the cmd.
func probeServing(t *testing.T, bins, program string) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := "unix://" + filepath.Join(dir, "grpc.sock")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // bounds the Wait below
	defer cancel()
	server := exec.CommandContext(ctx, filepath.Join(bins, program))
	// Without an identity: the probe here speaks plain gRPC (a pod's probe runs with -spiffe).
	server.Env = []string{"NSM_LISTEN_ON=" + sock, "NSM_INSECURE=true"}
	var log bytes.Buffer
	server.Stdout, server.Stderr = &log, &log
	require.NoError(t, server.Start())
	t.Cleanup(func() {
		_ = server.Process.Kill()
		_ = server.Wait()
	})

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		out, err := exec.Command(filepath.Join(bins, probe), "-addr="+sock, "-connect-timeout=1s").CombinedOutput()
		assert.NoError(c, err, "grpc-health-probe -addr=%s: %s", sock, out)
		assert.Contains(c, string(out), "SERVING")
	}, 30*time.Second, 50*time.Millisecond)

	require.NoError(t, server.Process.Signal(syscall.SIGTERM))
	require.NoError(t, server.Wait(), "%s at SIGTERM: %s", program, &log)
}

func manifestOf(t *testing.T, img v1.Image) *v1.Manifest {
	t.Helper()
	m, err := img.Manifest()
	require.NoError(t, err)
	return m
}

func digest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	require.NoError(t, err)
	return d
}

type testRegistry struct {
	host      string
	transport *http.Transport
}

// newRegistry serves go-containerregistry's in-memory registry on loopback.
func newRegistry(t *testing.T) testRegistry {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	transport := &http.Transport{}
	t.Cleanup(func() {
		transport.CloseIdleConnections()
		srv.Close()
	})
	return testRegistry{host: strings.TrimPrefix(srv.URL, "http://"), transport: transport}
}
