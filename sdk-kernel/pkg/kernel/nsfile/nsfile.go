// Package nsfile opens network namespaces, from a descriptor a peer passed or from a path, and
// runs code inside a network namespace without leaking it into other goroutines.
//
// Why: a workload's namespace reaches the forwarder named in the mechanism parameters
// (kernel.NetNSURL). NSM's clients and endpoints pass it as a descriptor beside the gRPC call,
// named inode://<device>/<inode> (sdk/pkg/tools/fdpass); FromFile turns the received file into
// a handle. A path, file:///proc/<pid>/ns/net or file:///var/run/netns/<name>, means something
// only in the forwarder's mount namespace and names whatever its sender likes, so Open is for a
// forwarder's own namespace and for meshes whose operator allows paths. A netns.NsHandle serves
// netlink.NewHandleAt, which is how the rest of this module works in a namespace: a netlink
// socket opened there serves any goroutine, with no thread switching. Do is for the few calls
// that have no netlink form (opening a TUN device or a UDP socket in a namespace).
//
// Guarantees:
//   - Open accepts only file:// URLs with an absolute path (an inode:// URL is InvalidArgument:
//     its file comes as a descriptor, see FromFile); FromFile opens the file a descriptor refers
//     to anew (a descriptor sent by path is O_PATH and serves no setns), never a path that a
//     peer could have chosen. Both check that the file is a network namespace before returning
//     it: a missing file is NotFound, anything else InvalidArgument; neither blocks on a FIFO;
//   - Do runs fn on a fresh goroutine locked to its OS thread; the caller's thread never changes
//     namespace. The thread goes back to its namespace afterwards, or, if that fails, dies with
//     the goroutine instead of returning to the scheduler in the wrong namespace. A panic in fn
//     is re-raised in the caller.
package nsfile

import (
	"errors"
	"fmt"
	"net/url"
	"os"
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
	return open(file, u)
}

// FromFile returns a handle to the network namespace f refers to, a descriptor received from a
// peer (any open mode, O_PATH included), named u in messages. The caller closes the handle; f
// stays the caller's.
func FromFile(f *os.File, u string) (netns.NsHandle, error) {
	// The descriptor's own entry in /proc reopens the very file it refers to, whatever its path.
	return open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), u)
}

// open opens file, which must be a network namespace, named u in messages.
func open(file, u string) (netns.NsHandle, error) {
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

// Same reports whether a and b are the same namespace.
func Same(a, b netns.NsHandle) bool {
	var sa, sb unix.Stat_t
	return unix.Fstat(int(a), &sa) == nil && unix.Fstat(int(b), &sb) == nil && sa.Dev == sb.Dev && sa.Ino == sb.Ino
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
		return "", kerr.New(codes.InvalidArgument,
			"nsfile: netns URL %q names a namespace passed as a descriptor, not a path; open the received file with FromFile", u)
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
