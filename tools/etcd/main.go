// Command etcd is etcd's own server, built from the Go module proxy for the Kubernetes API server
// vwire's tests start. A module of its own, outside go.work (build with GOWORK=off).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
