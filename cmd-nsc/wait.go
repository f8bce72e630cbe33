package main

// `cmd-nsc wait` is the client's second job in a pod: the admission webhook
// (cmd-admission-webhook-k8s) runs the client as a native sidecar, which starts and keeps going,
// and after it an init container running `cmd-nsc wait`, which ends once the vWires are there.
// Only then does the kubelet start the pod's own containers, so they start with their
// interfaces. It reads the client's own variables (the pod gives both the same environment) and
// watches the links of its network namespace, the pod's, over netlink: no polling.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/log"
)

const waitAbout = `cmd-nsc wait: waits until every interface NSM_NETWORK_SERVICES names exists and is up in this
process's network namespace, then exits 0; exits 1 if that takes longer than NSM_REQUEST_TIMEOUT.
It reads the client's variables, and is meant to run after the client (cmd-nsc) in the same pod.`

// waitMain runs `cmd-nsc wait` and exits when the first argument is "wait", and returns otherwise.
func waitMain() {
	if len(os.Args) < 2 || os.Args[1] != "wait" {
		return
	}
	c := &config{}
	cmd := envconfig.Command{Name: "cmd-nsc wait", About: waitAbout, Spec: c, Run: func(ctx context.Context) error {
		return wait(ctx, c)
	}}
	os.Exit(cmd.Execute(context.Background(), os.Args[2:], os.Stdout, os.Stderr))
}

// Where an interface the client asks for stands.
const (
	missing = "missing"
	down    = "down"
	up      = "up"
)

func wait(ctx context.Context, c *config) error {
	services, _, err := c.services()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	defer cancel()
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	failed := make(chan error, 1)
	// No ListExisting: netlink sends that dump to the subscription's multicast group, which
	// needs CAP_NET_ADMIN, and a pod's containers have not got it. The links there now are listed
	// after subscribing instead, so that no change falls between the list and the updates.
	err = netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case failed <- err:
			default:
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watch the interfaces of this network namespace: %w", err)
	}
	existing, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list the interfaces of this network namespace: %w", err)
	}

	state := map[string]string{}
	for _, u := range services {
		state[u.Interface] = missing
	}
	names := map[int]string{} // by index, the interfaces in state seen so far: a rename frees a name
	see := func(attrs *netlink.LinkAttrs, flags uint32, deleted bool) {
		if old, ok := names[attrs.Index]; ok {
			state[old] = missing
			delete(names, attrs.Index)
		}
		if _, wanted := state[attrs.Name]; !wanted || deleted {
			return
		}
		names[attrs.Index] = attrs.Name
		state[attrs.Name] = down
		if flags&unix.IFF_UP != 0 && flags&unix.IFF_RUNNING != 0 { // RUNNING: carrier, the far end is up too
			state[attrs.Name] = up
			log.FromContext(ctx).Info("interface up", "interface", attrs.Name)
		}
	}
	for _, link := range existing {
		see(link.Attrs(), link.Attrs().RawFlags, false)
	}
	for {
		if ready(state) {
			log.FromContext(ctx).Info("every vWire is up", "interfaces", services.interfaces())
			return nil
		}
		select {
		case u, ok := <-updates:
			if !ok {
				return errors.New("watch the interfaces of this network namespace: netlink closed the subscription")
			}
			see(u.Attrs(), u.Flags, u.Header.Type == unix.RTM_DELLINK)
		case err := <-failed:
			return fmt.Errorf("watch the interfaces of this network namespace: %w", err)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("no vWire within NSM_REQUEST_TIMEOUT=%s: %s; the client's log says why", c.RequestTimeout, describeState(services, state))
			}
			return fmt.Errorf("stopped while waiting: %s", describeState(services, state))
		}
	}
}

func ready(state map[string]string) bool {
	for _, s := range state {
		if s != up {
			return false
		}
	}
	return true
}

// describeState says, in the order of services, which interfaces are not up.
func describeState(services serviceURLs, state map[string]string) string {
	var out []string
	for _, u := range services {
		if s := state[u.Interface]; s != up {
			out = append(out, u.Interface+" is "+s)
		}
	}
	return strings.Join(out, ", ")
}

// interfaces are the names of the interfaces the client asks for, in order.
func (s serviceURLs) interfaces() []string {
	out := make([]string, len(s))
	for i, u := range s {
		out[i] = u.Interface
	}
	return out
}
