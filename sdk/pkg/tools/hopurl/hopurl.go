// Package hopurl turns the URL of a next hop (an endpoint, an nsmgr, a forwarder, a registry)
// into what gRPC dials and what a server listens on.
//
// Components name each other by URL: unix:///var/lib/networkservicemesh/nsm.io.sock for a
// socket on the node, tcp://10.0.0.2:5001 or tcp://[fd00::2]:5001 across nodes. gRPC wants a
// target string instead, and net.Listen a network and an address; this package is the one place
// that converts, so every component accepts the same URLs and rejects the same mistakes.
//
// Guarantees: Target and Listen accept only unix URLs with an absolute socket path that fits a
// Linux socket address, and tcp URLs with a host and a numeric port (Listen also takes an empty
// host or port 0); anything else is an *Error, whose gRPC status is InvalidArgument and whose
// message names the URL, what is wrong and the accepted forms. Target never panics, on any URL.
package hopurl

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The schemes a next-hop URL may have.
const (
	Unix = "unix"
	TCP  = "tcp"
)

// maxSocketPath is the longest socket path Linux accepts: sun_path is 108 bytes with its NUL.
const maxSocketPath = 107

// Error says why a URL cannot name a next hop. Its gRPC status is InvalidArgument.
type Error struct {
	URL     string // the URL as given
	Problem string // what is wrong and how to fix it
}

func (e *Error) Error() string {
	return fmt.Sprintf("hopurl: next-hop URL %q: %s", e.URL, e.Problem)
}

// GRPCStatus makes the error an InvalidArgument status when it crosses gRPC, also when wrapped.
func (e *Error) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Error())
}

const accepted = "use unix:///path/to/socket or tcp://host:port"

func invalid(u *url.URL, format string, args ...any) error {
	s := "<nil>"
	if u != nil {
		s = u.String()
	}
	return &Error{URL: s, Problem: fmt.Sprintf(format, args...)}
}

// Target returns the gRPC dial target for u: unix:///path/to/sock for a unix URL, host:port for
// a tcp URL whose host is an IP address (tcp://[::1]:5001 gives [::1]:5001), and
// dns:///host:port for a host name or a scoped IPv6 address, so that gRPC never mistakes a
// host name such as "unix" for a scheme of its own.
func Target(u *url.URL) (string, error) {
	network, addr, err := parse(u, false)
	if err != nil {
		return "", err
	}
	if network == Unix {
		return (&url.URL{Scheme: Unix, Path: addr}).String(), nil
	}
	host, _, _ := net.SplitHostPort(addr)
	if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() == "" {
		return addr, nil
	}
	return "dns:///" + (&url.URL{Path: addr}).EscapedPath(), nil
}

// Listen listens on u for a server. For a unix URL it makes the socket's directory if missing
// and removes a socket file left by a process that is gone; it refuses to remove a socket that
// still answers or a file that is not a socket. A tcp URL may leave the host empty (all
// addresses) or ask for port 0 (any free port; see FromAddr for the URL of what was bound).
func Listen(u *url.URL) (net.Listener, error) {
	network, addr, err := parse(u, true)
	if err != nil {
		return nil, err
	}
	if network == Unix {
		if err := clearStale(u, addr); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("hopurl: listen on %s: %w", u, err)
	}
	return ln, nil
}

// FromAddr returns the URL of a listener's address: unix:///path or tcp://host:port.
func FromAddr(addr net.Addr) *url.URL {
	if addr.Network() == Unix {
		return &url.URL{Scheme: Unix, Path: addr.String()}
	}
	return &url.URL{Scheme: TCP, Host: addr.String()}
}

// parse checks u and returns the network and address for net.Dial or net.Listen.
func parse(u *url.URL, listen bool) (network, addr string, err error) {
	if u == nil {
		return "", "", invalid(u, "missing; %s", accepted)
	}
	switch {
	case u.User != nil:
		return "", "", invalid(u, "has user information; %s", accepted)
	case u.RawQuery != "" || u.ForceQuery:
		return "", "", invalid(u, "has a query; %s", accepted)
	case u.Fragment != "":
		return "", "", invalid(u, "has a fragment; %s", accepted)
	}
	switch u.Scheme {
	case Unix:
		return parseUnix(u)
	case TCP:
		return parseTCP(u, listen)
	case "":
		return "", "", invalid(u, "has no scheme; %s", accepted)
	default:
		return "", "", invalid(u, "scheme %q is not supported; %s", u.Scheme, accepted)
	}
}

func parseUnix(u *url.URL) (network, addr string, err error) {
	switch {
	case u.Opaque != "":
		return "", "", invalid(u, "socket path %q is relative; use unix:///absolute/path", u.Opaque)
	case u.Host != "":
		return "", "", invalid(u, "has host %q; a unix URL has three slashes: unix:///%s%s", u.Host, u.Host, u.Path)
	case u.Path == "" || u.Path == "/":
		return "", "", invalid(u, "has no socket path; use unix:///path/to/socket")
	case strings.HasSuffix(u.Path, "/"):
		return "", "", invalid(u, "socket path %q names a directory; add the socket's file name", u.Path)
	case strings.IndexByte(u.Path, 0) >= 0:
		return "", "", invalid(u, "socket path contains a NUL byte")
	case len(u.Path) > maxSocketPath:
		return "", "", invalid(u, "socket path is %d bytes, Linux allows %d; use a shorter directory", len(u.Path), maxSocketPath)
	}
	return Unix, u.Path, nil
}

func parseTCP(u *url.URL, listen bool) (network, addr string, err error) {
	if u.Opaque != "" {
		return "", "", invalid(u, "has no host; use tcp://host:port")
	}
	if u.Path != "" && u.Path != "/" {
		return "", "", invalid(u, "has path %q; a tcp URL is only tcp://host:port", u.Path)
	}
	host, portText := u.Hostname(), u.Port()
	if host == "" && !listen {
		return "", "", invalid(u, "has no host; use tcp://host:port, e.g. tcp://127.0.0.1:5001 or tcp://[::1]:5001")
	}
	if portText == "" {
		return "", "", invalid(u, "has no port; use tcp://host:port")
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || (port == 0 && !listen) {
		return "", "", invalid(u, "port %q is not a port number 1-65535", portText)
	}
	if strings.ContainsAny(host, "/\\ \t\r\n") {
		return "", "", invalid(u, "host %q is not a host name or an IP address", host)
	}
	return TCP, net.JoinHostPort(host, strconv.FormatUint(port, 10)), nil
}

// clearStale prepares path for a new socket: it makes the directory and removes a dead socket.
func clearStale(u *url.URL, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("hopurl: listen on %s: %w", u, err)
	}
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("hopurl: listen on %s: %w", u, err)
	}
	if info.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("hopurl: listen on %s: %s exists and is not a socket; remove it or pick another path", u, path)
	}
	if c, err := net.DialTimeout(Unix, path, time.Second); err == nil {
		_ = c.Close()
		return fmt.Errorf("hopurl: listen on %s: another process is serving on this socket", u)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("hopurl: listen on %s: remove stale socket: %w", u, err)
	}
	return nil
}
