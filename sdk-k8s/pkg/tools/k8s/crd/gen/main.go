// Command gen writes the CRD manifests of package crd into crd.Dirs; `go generate` runs it in
// the crd package's folder.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"vwire.dev/sdk-k8s/pkg/tools/k8s/crd"
)

func main() {
	if err := write(); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func write() error {
	manifests, err := crd.Manifests()
	if err != nil {
		return err
	}
	for _, dir := range crd.Dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for file, y := range manifests {
			if err := os.WriteFile(filepath.Join(dir, file), y, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}
