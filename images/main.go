// Command images writes one container image per vwire cmd, as a docker-style tarball named
// <cmd>.tar in the output folder (`make images`: .build/images), without Docker.
//
// Every folder cmd-* of the Go workspace that holds a main package gets an image, found anew at
// each run, so a cmd added later needs no change here; arguments pick some of them by name. An
// image holds one layer:
//
//	bin/                    0755
//	bin/<cmd>               0755  the cmd, static, the image's entrypoint (/bin/<cmd>)
//	bin/grpc-health-probe   0755  only for cmds that serve the gRPC health service
//	tmp/                    1777  os.TempDir: the forwarder and endpoints make their default sockets there
//
// and the environment PATH=/bin, so `kubectl exec <pod> -- grpc-health-probe ...` finds it. The
// NSM_* configuration is the deployment's. The image has no user (it runs as root, which the
// privileged forwarder needs), no CA certificates (no cmd dials a public TLS server), no /etc
// (the container runtime mounts hosts, hostname and resolv.conf). What the forwarder makes at run
// time (/var/run/wireguard for wireguard-go's sockets) it makes itself.
//
// A cmd serves gRPC when it links google.golang.org/grpc/health; those get grpc-health-probe
// (tools/grpc-health-probe, a module outside go.work), which NSM's manifests probe them with.
//
// The same source gives the same image digest: binaries are built with CGO_ENABLED=0, -trimpath,
// -buildvcs=false and without symbols or build ID, with GOFLAGS cleared; every time in the image
// is SOURCE_DATE_EPOCH, or else the time of the last git commit (package ociimage keeps the rest
// stable). Images are named <repo>/<cmd>:<version>; the version is `git describe --tags --always
// --dirty` unless given. An image over 30 MB compressed (50 MB for -prebuilt) is an error, not a
// warning.
//
// With -prebuilt, the programs vwire runs but does not write (SPIRE's server and agent,
// spire-controller-manager: the Kubernetes examples' identity) get images of the same shape,
// /bin/<program> as the entrypoint, from the static binaries in that folder (`make spire-bins`
// builds them there, with the flags SPIRE's SQLite needs); a program that needs a dynamic loader
// is refused, since the images hold no C library.
package main

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"vwire.dev/images/pkg/ociimage"
)

// maxCompressed is the limit on an image's compressed size: manifest, config and layer.
// maxPrebuilt is the limit for the -prebuilt programs, which vwire does not write: spire-server
// links every plugin SPIRE has (the clouds' key managers and attestors), 42 MB compressed.
const (
	maxCompressed = 30_000_000
	maxPrebuilt   = 50_000_000
)

// probe is the gRPC health client NSM's manifests run in the containers, at this path.
const (
	probe       = "grpc-health-probe"
	probePkg    = "github.com/grpc-ecosystem/grpc-health-probe"
	probeModule = "tools/grpc-health-probe"
	healthPkg   = "google.golang.org/grpc/health"
)

// prebuilt are the programs whose images -prebuilt makes from the binaries in its folder.
var prebuilt = []string{"spire-agent", "spire-controller-manager", "spire-server"}

// goBuild builds a static binary with nothing of the build machine in it.
var goBuild = []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid="}

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); errors.Is(err, flag.ErrHelp) {
		return // the usage is out
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

// cmd is one main package of the workspace.
type cmd struct {
	Name       string // its folder: cmd-nsmgr
	ImportPath string
	ServesGRPC bool
	// Program is a binary built elsewhere (-prebuilt), put into the image as it is; ImportPath is
	// then empty.
	Program string
}

func run(ctx context.Context, args []string, out io.Writer) error {
	flags := flag.NewFlagSet("images", flag.ContinueOnError)
	flags.Usage = func() {
		fmt.Fprintln(flags.Output(), "usage: go run ./images [-out dir] [-repo prefix] [-version tag] [cmd-name ...]")
		flags.PrintDefaults()
		fmt.Fprintln(flags.Output(), "  SOURCE_DATE_EPOCH (environment)\n    \tseconds since 1970, the time of every entry of the images (default: the last commit's time)")
	}
	outDir := flags.String("out", "", "folder of the tarballs (default: .build/images of the workspace)")
	repo := flags.String("repo", "ghcr.io/vwire", "repository prefix of the image names, <repo>/<cmd>:<version>")
	version := flags.String("version", "", "the images' tag (default: git describe --tags --always --dirty)")
	prebuiltDir := flags.String("prebuilt", "", "folder of static binaries of "+strings.Join(prebuilt, ", ")+" (make spire-bins), which then get images too")
	if err := flags.Parse(args); err != nil {
		return err
	}

	ws, err := goOutput(ctx, "", nil, "env", "GOWORK")
	if err != nil || ws == "" || ws == "off" {
		return fmt.Errorf("no Go workspace here (go env GOWORK: %q, %v); run inside vwire's repository", ws, err)
	}
	ws = filepath.Dir(ws)
	if *outDir == "" {
		*outDir = filepath.Join(ws, ".build", "images")
	}
	if *version == "" {
		if *version, err = git(ctx, ws, "describe", "--tags", "--always", "--dirty"); err != nil {
			return fmt.Errorf("no version: %w; give one with -version", err)
		}
	}
	created, err := sourceDate(ctx, ws)
	if err != nil {
		return err
	}
	platform, err := goOutput(ctx, ws, nil, "env", "GOOS", "GOARCH")
	if err != nil {
		return err
	}
	goos, goarch, _ := strings.Cut(platform, "\n")
	if goos != "linux" {
		return fmt.Errorf("GOOS is %q; images hold linux binaries, unset GOOS or set it to linux", goos)
	}

	all, err := discover(ctx, ws)
	if err != nil {
		return err
	}
	if *prebuiltDir != "" {
		progs, err := programs(*prebuiltDir)
		if err != nil {
			return err
		}
		all = append(all, progs...)
	}
	cmds, err := pick(all, flags.Args())
	if err != nil {
		return err
	}
	tags := make([]name.Tag, len(cmds))
	for i, c := range cmds {
		if tags[i], err = name.NewTag(*repo + "/" + c.Name + ":" + *version); err != nil {
			return fmt.Errorf("image name from -repo %q and -version %q: %w", *repo, *version, err)
		}
	}

	bin, err := os.MkdirTemp("", "vw-images")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(bin) }()
	if slices.ContainsFunc(cmds, func(c cmd) bool { return c.ServesGRPC }) {
		if _, err := goOutput(ctx, filepath.Join(ws, probeModule), []string{"GOWORK=off"},
			slices.Concat(goBuild, []string{"-o", filepath.Join(bin, probe), probePkg})...); err != nil {
			return fmt.Errorf("build %s in %s: %w", probe, probeModule, err)
		}
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	base := ociimage.Config{Env: []string{"PATH=/bin"}, OS: goos, Architecture: goarch, Created: created, CreatedBy: "vwire.dev/images"}
	for i, c := range cmds {
		img, err := image(ctx, ws, bin, c, base)
		if err != nil {
			return err
		}
		compressed, uncompressed, err := ociimage.Sizes(img)
		if err != nil {
			return fmt.Errorf("image of %s: %w", c.Name, err)
		}
		limit := int64(maxCompressed)
		if c.Program != "" {
			limit = maxPrebuilt
		}
		if compressed > limit {
			return fmt.Errorf("image of %s is %s compressed, over the limit of %s; see what its binary links (go version -m, go tool nm -size -sort size)",
				c.Name, mb(compressed), mb(limit))
		}
		file := filepath.Join(*outDir, c.Name+".tar")
		if err := ociimage.Write(file, tags[i], img); err != nil {
			return err
		}
		digest, err := img.Digest()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s %s %s compressed, %s unpacked: %s\n", tags[i], digest, mb(compressed), mb(uncompressed), file)
	}
	return nil
}

// image builds c into bin (where grpc-health-probe already is, if c serves gRPC) and returns its
// image.
func image(ctx context.Context, ws, bin string, c cmd, config ociimage.Config) (v1.Image, error) {
	program := c.Program
	if program == "" {
		program = filepath.Join(bin, c.Name)
		if _, err := goOutput(ctx, ws, nil, slices.Concat(goBuild, []string{"-o", program, c.ImportPath})...); err != nil {
			return nil, fmt.Errorf("build %s: %w", c.Name, err)
		}
	}
	files := []ociimage.File{
		{Path: "bin", Mode: fs.ModeDir | 0o755},
		{Path: "bin/" + c.Name, Mode: 0o755, Source: program},
		{Path: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
	}
	if c.ServesGRPC {
		files = append(files, ociimage.File{Path: "bin/" + probe, Mode: 0o755, Source: filepath.Join(bin, probe)})
	}
	config.Entrypoint = []string{"/bin/" + c.Name}
	img, err := ociimage.New(files, config)
	if err != nil {
		return nil, fmt.Errorf("image of %s: %w", c.Name, err)
	}
	return img, nil
}

// discover returns the main packages at the root of the workspace's cmd-* modules, by name.
func discover(ctx context.Context, ws string) ([]cmd, error) {
	mods, err := goOutput(ctx, ws, nil, "list", "-m", "-f", "{{.Dir}} {{.Path}}")
	if err != nil {
		return nil, err
	}
	var paths []string
	for line := range strings.Lines(mods) {
		dir, path, _ := strings.Cut(strings.TrimSpace(line), " ")
		if strings.HasPrefix(filepath.Base(dir), "cmd-") {
			paths = append(paths, path)
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no cmd-* module in the workspace %s", ws)
	}
	// -e: a cmd-* folder without Go files yet (another cmd under way) is no error, and no cmd.
	list, err := goOutput(ctx, ws, nil, append([]string{"list", "-e", "-json=Name,ImportPath,Dir,Deps"}, paths...)...)
	if err != nil {
		return nil, err
	}
	var cmds []cmd
	for dec := json.NewDecoder(strings.NewReader(list)); ; {
		var p struct {
			Name, ImportPath, Dir string
			Deps                  []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list: %w", err)
		}
		if p.Name == "main" {
			cmds = append(cmds, cmd{Name: filepath.Base(p.Dir), ImportPath: p.ImportPath, ServesGRPC: slices.Contains(p.Deps, healthPkg)})
		}
	}
	slices.SortFunc(cmds, func(a, b cmd) int { return strings.Compare(a.Name, b.Name) })
	return cmds, nil
}

// programs returns the prebuilt programs of dir, each of which must be there and static.
func programs(dir string) ([]cmd, error) {
	var progs []cmd
	for _, n := range prebuilt {
		path := filepath.Join(dir, n)
		f, err := elf.Open(path)
		if err != nil {
			return nil, fmt.Errorf("-prebuilt %s: %w; make spire-bins builds %s there", dir, err, strings.Join(prebuilt, ", "))
		}
		dynamic := slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
		_ = f.Close()
		if dynamic {
			return nil, fmt.Errorf("-prebuilt %s: %s needs a dynamic loader, which its image would not have; link it statically (make spire-bins does)", dir, n)
		}
		progs = append(progs, cmd{Name: n, Program: path})
	}
	return progs, nil
}

// pick returns the cmds named, or all of them when none is.
func pick(all []cmd, names []string) ([]cmd, error) {
	if len(names) == 0 {
		return all, nil
	}
	var picked []cmd
	for _, n := range names {
		i := slices.IndexFunc(all, func(c cmd) bool { return c.Name == n })
		if i < 0 {
			known := make([]string, len(all))
			for j, c := range all {
				known[j] = c.Name
			}
			return nil, fmt.Errorf("no cmd %q in the workspace; the cmds are %s", n, strings.Join(known, ", "))
		}
		picked = append(picked, all[i])
	}
	return picked, nil
}

// sourceDate is the time every entry of the images carries: SOURCE_DATE_EPOCH, as reproducible
// builds name it, or the time of the last commit.
func sourceDate(ctx context.Context, ws string) (time.Time, error) {
	epoch, ok := os.LookupEnv("SOURCE_DATE_EPOCH")
	if !ok {
		var err error
		if epoch, err = git(ctx, ws, "log", "-1", "--format=%ct"); err != nil {
			return time.Time{}, fmt.Errorf("no time for the images: %w; set SOURCE_DATE_EPOCH (seconds since 1970)", err)
		}
	}
	seconds, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil || seconds < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q is not a number of seconds since 1970, e.g. 1700000000", epoch)
	}
	return time.Unix(seconds, 0).UTC(), nil
}

// goOutput runs the go command in dir with a cleared GOFLAGS, CGO_ENABLED=0 and env, and returns
// its trimmed output; what it writes to stderr goes into the error.
func goOutput(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	c := exec.CommandContext(ctx, "go", args...)
	c.Dir = dir
	c.Env = append(os.Environ(), append([]string{"GOFLAGS=", "CGO_ENABLED=0"}, env...)...)
	return output(c)
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	c := exec.CommandContext(ctx, "git", args...)
	c.Dir = dir
	return output(c)
}

func output(c *exec.Cmd) (string, error) {
	var stderr bytes.Buffer
	c.Stderr = &stderr
	b, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(c.Args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(b)), nil
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
