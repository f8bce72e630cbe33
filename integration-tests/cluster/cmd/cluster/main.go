// Command cluster starts the single-node Kubernetes of package cluster and leaves it running for a
// person to use (`make cluster-up`), or removes it (`make cluster-down`). The programs it starts
// outlive it; down finds them again from the state folder, so up and down may run in different
// shells. Defaults: programs in .build/bin, state in .build/cluster, images in .build/images.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"vwire.dev/integration-tests/cluster"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(args []string) error {
	flags := flag.NewFlagSet("cluster", flag.ContinueOnError)
	flags.Usage = func() {
		fmt.Fprintln(flags.Output(), "usage: cluster [-bin dir] [-state dir] [-images dir] up|down")
		flags.PrintDefaults()
	}
	var o cluster.Options
	flags.StringVar(&o.BinDir, "bin", "", "folder of the programs of `make cluster-bins` (default: $VWIRE_KUBE_BIN, else .build/bin)")
	flags.StringVar(&o.StateDir, "state", "", "folder of the cluster's state (default: .build/cluster)")
	flags.StringVar(&o.ImagesDir, "images", "", "folder of image tarballs to import (default: .build/images)")
	flags.IntVar(&o.Nodes, "nodes", 1, "how many nodes: the first on this machine, the others in network namespaces of their own")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() != 1 {
		flags.Usage()
		return fmt.Errorf("cluster: want one command, up or down; got %q", flags.Args())
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	switch flags.Arg(0) {
	case "up":
		o.Progress = os.Stdout
		c, err := cluster.Up(ctx, o)
		if err != nil {
			return err
		}
		fmt.Printf("\nThe cluster is up:")
		for _, n := range c.Nodes {
			fmt.Printf(" node %s at %s;", n.Name, n.IP)
		}
		fmt.Printf(" its kubeconfig is %s:\n\n", c.Kubeconfig)
		fmt.Printf("  export KUBECONFIG=%s\n", c.Kubeconfig)
		fmt.Printf("  %s get pods -A\n\n", c.Kubectl().Path)
		fmt.Println("`make cluster-down` removes it.")
		return nil
	case "down":
		return cluster.Clean(ctx, o)
	default:
		flags.Usage()
		return fmt.Errorf("cluster: unknown command %q; want up or down", flags.Arg(0))
	}
}
