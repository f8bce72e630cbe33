// Command pause is the cluster's sandbox program: the first process of every pod, holding the
// pod's namespaces while its containers come and go. It waits for SIGTERM or SIGINT and exits 0,
// as Kubernetes' own pause does; it reaps the zombies of a pod that shares its process namespace,
// where it is PID 1.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			return
		case <-children:
			for {
				var status syscall.WaitStatus
				if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
