// Package ociimage makes a container image of one layer from a list of files, and writes it as a
// tarball that `ctr images import`, `docker load` and `crane push` accept.
//
// It exists so that vwire's images are built without Docker and are reproducible: the same files,
// entrypoint, platform and time give the same image digest, byte for byte, on any machine. For
// that the layer's entries are sorted by path, owned by root (uid and gid 0, no user names), and
// stamped with the one given time, which is also the config's and the history's created time;
// the gzip stream has no name or time of its own. Nothing of the machine that builds the image
// (paths, users, clocks) reaches it.
//
// The media types are Docker schema 2 (as go-containerregistry's empty image has them), not OCI:
// a docker-style tarball carries no manifest, and readers of it (go-containerregistry's tarball
// package, containerd) rebuild a Docker schema 2 manifest. With these types the digest New
// returns is the digest read back from the tarball and the digest a registry stores after a push.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one entry of the layer.
type File struct {
	// Path inside the image, relative to its root and clean: "bin/cmd-nsmgr", "tmp".
	Path string
	// Mode is the permission bits (with fs.ModeSticky, fs.ModeSetuid, fs.ModeSetgid) and
	// fs.ModeDir for a directory.
	Mode fs.FileMode
	// Source is the file on this machine whose content goes into the image; empty for a directory.
	Source string
}

// Config is what the image's config says beside its layer.
type Config struct {
	Entrypoint []string
	Env        []string
	// OS and Architecture of the binaries in the layer, as GOOS and GOARCH name them.
	OS, Architecture string
	// Created stamps every layer entry, the config and its history; whole seconds are kept.
	Created time.Time
	// CreatedBy names the tool in the image's history.
	CreatedBy string
}

// New returns the image of files (in any order) with the config c. Every directory on a file's
// path must be listed itself: the modes of the image's directories are the caller's choice.
func New(files []File, c Config) (v1.Image, error) {
	if len(c.Entrypoint) == 0 || c.OS == "" || c.Architecture == "" {
		return nil, fmt.Errorf("ociimage: config %+v needs an entrypoint, an OS and an architecture", c)
	}
	created := c.Created.UTC().Truncate(time.Second)
	layerTar, err := tarLayer(files, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.DefaultCompression), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("ociimage: layer: %w", err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: created}, CreatedBy: c.CreatedBy},
	})
	if err != nil {
		return nil, fmt.Errorf("ociimage: append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("ociimage: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: created}
	cf.OS, cf.Architecture = c.OS, c.Architecture
	cf.Config = v1.Config{Entrypoint: c.Entrypoint, Env: c.Env}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("ociimage: config: %w", err)
	}
	return img, nil
}

// tarLayer returns the uncompressed layer: files sorted by path, each checked first.
func tarLayer(files []File, created time.Time) ([]byte, error) {
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	dirs := map[string]bool{".": true}
	for i, f := range sorted {
		if !fs.ValidPath(f.Path) || f.Path == "." {
			return nil, fmt.Errorf("ociimage: file path %q is not a clean path relative to the image's root; write it as bin/name", f.Path)
		}
		if i > 0 && sorted[i-1].Path == f.Path {
			return nil, fmt.Errorf("ociimage: file path %q is listed twice", f.Path)
		}
		// Sorted order puts a directory before what it holds.
		if parent := path.Dir(f.Path); !dirs[parent] {
			return nil, fmt.Errorf("ociimage: file %q is in directory %q, which is not listed; list it with its mode", f.Path, parent)
		}
		if f.Mode.IsDir() {
			dirs[f.Path] = true
		}
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range sorted {
		if err := writeEntry(tw, f, created); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("ociimage: layer: %w", err)
	}
	return buf.Bytes(), nil
}

func writeEntry(tw *tar.Writer, f File, created time.Time) error {
	hdr := &tar.Header{Name: f.Path, Mode: tarMode(f.Mode), ModTime: created, Format: tar.FormatUSTAR}
	if f.Mode.IsDir() {
		if f.Source != "" {
			return fmt.Errorf("ociimage: directory %q has a source %q; a directory's content is the files listed under it", f.Path, f.Source)
		}
		hdr.Typeflag, hdr.Name = tar.TypeDir, f.Path+"/"
		return tw.WriteHeader(hdr)
	}
	if !f.Mode.IsRegular() {
		return fmt.Errorf("ociimage: file %q has mode %v; only regular files and directories go into a layer", f.Path, f.Mode)
	}
	content, err := os.ReadFile(f.Source)
	if err != nil {
		return fmt.Errorf("ociimage: file %q: %w", f.Path, err)
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(content))
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("ociimage: file %q: %w", f.Path, err)
	}
	_, err = tw.Write(content)
	return err
}

// tarMode turns Go's file mode bits into the Unix ones a tar header holds.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// Sizes returns what img takes in a registry or a tarball (manifest, config and compressed
// layers) and what its layers take unpacked (their uncompressed tar streams).
func Sizes(img v1.Image) (compressed, uncompressed int64, err error) {
	manifest, err := img.RawManifest()
	if err != nil {
		return 0, 0, err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return 0, 0, err
	}
	compressed = int64(len(manifest) + len(config))
	layers, err := img.Layers()
	if err != nil {
		return 0, 0, err
	}
	for _, l := range layers {
		size, err := l.Size()
		if err != nil {
			return 0, 0, err
		}
		compressed += size
		rc, err := l.Uncompressed()
		if err != nil {
			return 0, 0, err
		}
		n, err := io.Copy(io.Discard, rc)
		_ = rc.Close()
		if err != nil {
			return 0, 0, err
		}
		uncompressed += n
	}
	return compressed, uncompressed, nil
}

// Write writes img, named tag, as a docker-style tarball at file. It writes a temporary file
// beside it first, so a failed write leaves no tarball and an earlier one stays whole.
func Write(file string, tag name.Tag, img v1.Image) error {
	tmp := file + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("ociimage: write %s: %w", file, err)
	}
	if err := os.Rename(tmp, file); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("ociimage: write %s: %w", file, err)
	}
	return nil
}
