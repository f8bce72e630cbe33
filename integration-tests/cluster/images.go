package cluster

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"vwire.dev/images/pkg/ociimage"
)

// clusterImages are the images Up makes from programs of the bin folder, for the cluster itself:
// the pods' sandbox and the cluster DNS.
var clusterImages = []struct{ tag, program string }{
	{pauseImage, "pause"},
	{corednsImage, "coredns"},
}

// buildImages writes the cluster's own images into the state folder and returns their tarballs.
func (c *Cluster) buildImages() ([]string, error) {
	var tars []string
	for _, im := range clusterImages {
		tag, err := name.NewTag(im.tag)
		if err != nil {
			return nil, err
		}
		img, err := ociimage.New(
			[]ociimage.File{{Path: im.program, Mode: 0o755, Source: filepath.Join(c.opts.BinDir, im.program)}},
			ociimage.Config{
				Entrypoint: []string{"/" + im.program}, OS: "linux", Architecture: runtime.GOARCH,
				Created: time.Unix(0, 0), CreatedBy: "vwire.dev/integration-tests/cluster",
			})
		if err != nil {
			return nil, fmt.Errorf("cluster: image %s: %w", im.tag, err)
		}
		tar := filepath.Join(c.dir, "images", im.program+".tar")
		if err := ociimage.Write(tar, tag, img); err != nil {
			return nil, err
		}
		tars = append(tars, tar)
	}
	return tars, nil
}

// importImages imports every tarball into the k8s.io namespace of the containerd at socket,
// where the kubelet looks.
func (c *Cluster) importImages(ctx context.Context, socket string, tars []string) error {
	var wg sync.WaitGroup
	errs := make([]error, len(tars))
	for i, tar := range tars {
		wg.Go(func() {
			out, err := exec.CommandContext(ctx, filepath.Join(c.opts.BinDir, "ctr"),
				"--address", socket, "--namespace", "k8s.io", "images", "import", tar).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("cluster: ctr images import %s: %w: %s", tar, err, out)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
