// Package kernel is the workload's side of NSM's KERNEL mechanism, for clients and endpoints:
// it names the workload's own network namespace and the interface it wants, so that the
// forwarder makes the vWire's end there. It sits where NSM's element of the same name sits
// (sdk/pkg/networkservice/common/mechanisms/kernel); the forwarder's side, which makes the
// interface, is sdk-kernel's pkg/kernel/networkservice/mechanisms/kernel.
//
// The client (NewClient) acts before next: it sets the namespace and an interface name in every
// KERNEL preference of the request, and offers a KERNEL preference when the request has none.
// The server (NewServer, an endpoint's, inside mechanisms' KERNEL sub-chain) acts before next:
// it states the endpoint's namespace in the mechanism it accepts, and its interface name when
// WithInterfaceName gave one (otherwise the name the forwarder offered stands).
//
// Namespaces are named by path, file:///proc/<pid>/ns/net of this process (or WithNetNSURL's),
// for sendfd (in the client chain already; sendfd.NewServer in an endpoint's) to send as a
// descriptor: forwarders take a namespace only as a descriptor. NSM names /proc/thread-self: a
// path that depends on the thread that opens it, which in Go is any thread; the process's own is
// what a workload means.
//
// Differences from NSM's, on purpose:
//   - a namespace or interface name the caller put in a preference is kept (a client may ask
//     for another process's namespace it holds), where NSM's overwrites the namespace;
//   - a generated interface name is derived from the service and the connection ID, not random,
//     so that a client restarted with the same connection IDs asks for the same names;
//   - WithInterfaceName takes a name Linux accepts, checked in the constructor (a panic names
//     it), not at the first Request.
package kernel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/api/validate"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// Option configures the client or the server.
type Option func(*options)

type options struct {
	name  string // the interface name; empty: derived (client) or the forwarder's (server)
	netns string
}

// WithInterfaceName asks for the interface to be called name.
func WithInterfaceName(name string) Option {
	if err := validate.InterfaceName(name); err != nil {
		panic("kernel.WithInterfaceName: " + err.Error())
	}
	return func(o *options) { o.name = name }
}

// WithNetNSURL names another namespace than this process's, by file:// path: for a program that
// serves a workload in a namespace it made (a test's), as the elements after sendfd still send
// it as a descriptor.
func WithNetNSURL(u string) Option {
	if !strings.HasPrefix(u, "file:///") {
		panic(fmt.Sprintf("kernel.WithNetNSURL: %q is not a file:///path URL", u))
	}
	return func(o *options) { o.netns = u }
}

func build(opts []Option) *options {
	o := &options{netns: NetNSURL()}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// NetNSURL is the URL of this process's network namespace, as the elements name it.
func NetNSURL() string { return fmt.Sprintf("file:///proc/%d/ns/net", os.Getpid()) }

// NewClient returns the client element that offers this process's namespace.
func NewClient(opts ...Option) networkservice.NetworkServiceClient { return &client{build(opts)} }

type client struct{ o *options }

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	conn := req.GetConnection()
	offered := false
	for _, m := range req.GetMechanismPreferences() {
		if mech := kernel.ToMechanism(m); mech != nil {
			c.o.fill(mech, conn, true)
			offered = true
		}
	}
	if !offered {
		mech := kernel.ToMechanism(&networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM})
		c.o.fill(mech, conn, true)
		req.MechanismPreferences = append(req.MechanismPreferences, mech.Mechanism)
	}
	return next.Client(ctx).Request(ctx, req, opts...)
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return next.Client(ctx).Close(ctx, conn, opts...)
}

// NewServer returns the endpoint element that states this process's namespace in the KERNEL
// mechanism it accepts.
func NewServer(opts ...Option) networkservice.NetworkServiceServer { return &server{build(opts)} }

type server struct{ o *options }

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if mech := kernel.ToMechanism(req.GetConnection().GetMechanism()); mech != nil {
		mech.SetNetNSURL(s.o.netns) // the endpoint's own, whatever the forwarder's offer said
		s.o.fill(mech, req.GetConnection(), false)
	}
	return next.Server(ctx).Request(ctx, req)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// fill sets what mech lacks: the namespace, and the interface name (derived only when derive).
func (o *options) fill(mech *kernel.Mechanism, conn *networkservice.Connection, derive bool) {
	if mech.GetNetNSURL() == "" {
		mech.SetNetNSURL(o.netns)
	}
	switch {
	case o.name != "" && (mech.GetInterfaceName() == "" || !derive):
		mech.SetInterfaceName(o.name)
	case mech.GetInterfaceName() == "" && derive:
		mech.SetInterfaceName(DerivedName(conn.GetNetworkService(), conn.GetId()))
	}
}

// DerivedName is the interface name a client asks for when it was given none: up to six
// characters of the service, a dash, and eight hex digits of the connection ID's SHA-256 (15
// bytes at most, Linux's limit).
func DerivedName(service, connID string) string {
	prefix := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return -1
	}, service)
	if prefix == "" {
		prefix = "nsm"
	}
	sum := sha256.Sum256([]byte(connID))
	return prefix[:min(len(prefix), 6)] + "-" + hex.EncodeToString(sum[:4])
}
