// Package nsfile opens the network namespace that NSM's kernel mechanism names by URL, and runs
// code inside a network namespace without leaking it into other goroutines.
//
// Why: a workload's namespace reaches the forwarder as a URL in the mechanism parameters
// (kernel.NetNSURL): file:///proc/<pid>/ns/net for a process, file:///var/run/netns/<name> for a
// namespace made by `ip netns add`. Open turns it into a netns.NsHandle for netlink.NewHandleAt,
// which is how the rest of this module works in a namespace: a netlink socket opened there serves
// any goroutine, with no thread switching. Do is for the few calls that have no netlink form
// (opening a TUN device or a UDP socket in a namespace).
//
// Guarantees:
//   - Open accepts only file:// URLs with an absolute path, refuses inode:// URLs (NSM passes the
//     namespace as a file descriptor beside the gRPC call there, which needs grpcfd, not yet here)
//     with Unimplemented, and checks that the file is a network namespace before returning it:
//     a missing file is NotFound, anything else InvalidArgument; it never blocks on a FIFO;
//   - Do runs fn on a fresh goroutine locked to its OS thread; the caller's thread never changes
//     namespace. The thread goes back to its namespace afterwards, or, if that fails, dies with
//     the goroutine instead of returning to the scheduler in the wrong namespace. A panic in fn
//     is re-raised in the caller.
package nsfile

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"runtime"

	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/kerr"
)

// Open returns a handle to the network namespace named by u, a kernel mechanism's netns URL.
// The caller closes the handle.
func Open(u string) (netns.NsHandle, error) {
	file, err := Path(u)
	if err != nil {
		return netns.None(), err
	}
	// O_NONBLOCK: opening a FIFO someone named here must not hang the forwarder.
	fd, err := unix.Open(file, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return netns.None(), kerr.Wrap(err, "nsfile: open network namespace %s", u)
	}
	if err := checkNet(fd); err != nil {
		_ = unix.Close(fd)
		return netns.None(), kerr.New(codes.InvalidArgument, "nsfile: %s is not a network namespace: %v", u, err)
	}
	return netns.NsHandle(fd), nil
}

// Path returns the file a netns URL names, or why Open would refuse the URL, without opening it.
func Path(u string) (string, error) {
	parsed, err := url.Parse(u)
	if err != nil {
		return "", kerr.New(codes.InvalidArgument, "nsfile: netns URL %q does not parse: %v", u, err)
	}
	switch parsed.Scheme {
	case kernel.NetNSURLScheme:
	case "inode":
		return "", kerr.New(codes.Unimplemented,
			"nsfile: netns URL %q needs the namespace passed as a file descriptor (grpcfd), which vwire does not support yet; send file:///proc/<pid>/ns/net", u)
	default:
		return "", kerr.New(codes.InvalidArgument, "nsfile: netns URL %q has scheme %q; want file:///proc/<pid>/ns/net or file:///var/run/netns/<name>", u, parsed.Scheme)
	}
	if parsed.Host != "" && parsed.Host != "localhost" {
		return "", kerr.New(codes.InvalidArgument, "nsfile: netns URL %q names host %q; want file:///<absolute path>", u, parsed.Host)
	}
	p := parsed.Path
	if p == "" || !path.IsAbs(p) || path.Clean(p) != p {
		return "", kerr.New(codes.InvalidArgument, "nsfile: netns URL %q has no clean absolute path; want file:///proc/<pid>/ns/net or file:///var/run/netns/<name>", u)
	}
	if parsed.RawQuery != "" || parsed.Fragment != "" {
		return "", kerr.New(codes.InvalidArgument, "nsfile: netns URL %q has a query or fragment; want a plain file URL", u)
	}
	return p, nil
}

// checkNet fails unless fd is a namespace file (nsfs) of a network namespace.
func checkNet(fd int) error {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return err
	}
	if fs.Type != unix.NSFS_MAGIC {
		return errors.New("it is not a namespace file (nsfs)")
	}
	kind, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("NS_GET_NSTYPE: %w", err)
	}
	if kind != unix.CLONE_NEWNET {
		return fmt.Errorf("it is a namespace of another kind (CLONE flag %#x)", kind)
	}
	return nil
}

// Do runs fn with its OS thread inside ns and returns fn's error. Only the work fn does on its
// own goroutine happens in ns: goroutines fn starts run elsewhere, but sockets and devices fn
// opens stay in ns for their whole life, whoever uses them later.
func Do(ns netns.NsHandle, fn func() error) error {
	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread unless the thread is back home: a locked goroutine that exits takes
		// its thread with it, so a thread stuck in ns can never run other goroutines.
		origin, err := netns.Get()
		if err != nil {
			done <- result{err: kerr.Wrap(err, "nsfile: get the thread's network namespace")}
			return
		}
		defer func() { _ = origin.Close() }()
		if err := netns.Set(ns); err != nil {
			done <- result{err: kerr.Wrap(err, "nsfile: enter network namespace %s", ns)}
			if netns.Set(origin) == nil { // setns fails before moving, but be sure
				runtime.UnlockOSThread()
			}
			return
		}
		var r result
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.panic = p
				}
			}()
			r.err = fn()
		}()
		if err := netns.Set(origin); err == nil {
			runtime.UnlockOSThread()
		}
		done <- r
	}()
	r := <-done
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}
