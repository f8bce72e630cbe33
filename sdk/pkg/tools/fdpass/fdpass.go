// Package fdpass passes files beside gRPC calls over unix sockets, as NSM does: a workload's
// network namespace goes to the forwarder, an endpoint's namespace comes back, and an endpoint's
// socket goes to its nsmgr, each as a file descriptor (SCM_RIGHTS) with the call, named in the
// message by an inode URL, inode://<device>/<inode>. It wraps github.com/edwarnicke/grpcfd, the
// library NSM's components use, so vwire's components and NSM's pass files to each other.
//
// Why descriptors and not paths: a path means something only in the mount namespace of the
// process that wrote it (a pod's /proc/<pid>/ns/net is not the forwarder's), and a hop that opens
// a path a peer named opens whatever the peer liked (/proc/1/ns/net is the node's namespace). A
// descriptor can only be sent by a process that holds the file: a peer hands over only what it
// holds.
//
// What callers rely on:
//   - Credentials wraps transport credentials; a connection made with them over a unix socket
//     sends and receives descriptors, any other (TCP) behaves as before and passes none.
//   - Receive gives the file a peer sent with the call in ctx, or PermissionDenied after at most
//     RecvTimeout: a descriptor sent with a call is read before the call is handled, so the wait
//     only covers the reader's turn, and a file that was not sent is refused quickly.
//   - Files holds what one connection received, by inode URL, until it is closed; elements put
//     it in the context (WithFiles) for the elements after them in the same process.
//   - grpcfd itself keeps one copy of every distinct file received on a transport connection
//     until that connection closes: a long-lived connection between two hops holds one
//     descriptor per namespace that crossed it, not one per call.
package fdpass

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edwarnicke/grpcfd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Scheme is the scheme of the URL that names a passed file: inode://<device>/<inode>.
const Scheme = "inode"

// RecvTimeout bounds the wait for a file named in a call.
const RecvTimeout = time.Second

// Credentials returns transport credentials that pass descriptors over unix sockets and
// otherwise behave as c (insecure ones when c is nil).
func Credentials(c credentials.TransportCredentials) credentials.TransportCredentials {
	if c == nil {
		c = insecure.NewCredentials()
	}
	return grpcfd.TransportCredentials(c)
}

// IsURL reports whether u names a passed file (its scheme is inode).
func IsURL(u string) bool { return strings.HasPrefix(u, Scheme+"://") }

// Check returns an error unless u is a well-formed inode URL.
func Check(u string) error {
	parsed, err := url.Parse(u)
	if err == nil && parsed.Scheme == Scheme && parsed.RawQuery == "" && parsed.Fragment == "" && parsed.User == nil {
		_, devErr := strconv.ParseUint(parsed.Host, 10, 64)
		_, inoErr := strconv.ParseUint(strings.TrimPrefix(parsed.Path, "/"), 10, 64)
		if devErr == nil && inoErr == nil {
			return nil
		}
	}
	return status.Errorf(codes.InvalidArgument, "fdpass: %q is not an inode URL; want inode://<device>/<inode>, decimal numbers", u)
}

// URLOf returns the inode URL of an open file.
func URLOf(f *os.File) (string, error) {
	u, err := grpcfd.FileToURL(f)
	if err != nil {
		return "", fmt.Errorf("fdpass: stat %s: %w", f.Name(), err)
	}
	return u.String(), nil
}

// PathURL returns the inode URL of the file at path, following links as opening it would.
func PathURL(path string) (string, error) {
	u, err := grpcfd.FilenameToURL(path)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

// Peer returns what sends and receives files to and from the caller of the call in ctx (server
// side), or nil when the caller is not on a connection that passes descriptors.
func Peer(ctx context.Context) grpcfd.FDTransceiver {
	if t, ok := grpcfd.FromContext(ctx); ok {
		return t
	}
	return nil
}

// PeerOf returns what sends and receives files over the connection of p, or nil (client side:
// p filled by the grpc.Peer call option).
func PeerOf(p *peer.Peer) grpcfd.FDTransceiver {
	if p == nil || p.Addr == nil {
		return nil
	}
	if t, ok := grpcfd.FromPeer(p); ok {
		return t
	}
	return nil
}

// ForCall returns opts with per-RPC credentials through which files sent before the call go
// out with it, over whichever connection it takes (client side).
func ForCall(opts []grpc.CallOption) ([]grpc.CallOption, grpcfd.FDTransceiver) {
	creds := grpcfd.PerRPCCredentials(grpcfd.PerRPCCredentialsFromCallOptions(opts...))
	t, _ := grpcfd.FromPerRPCCredentials(creds)
	return append(opts, grpc.PerRPCCredentials(creds)), t
}

// Receive returns the file named by the inode URL u that recv's peer sent, waiting at most
// RecvTimeout; PermissionDenied if it was not sent. recv may be nil (a peer that cannot send).
func Receive(ctx context.Context, recv grpcfd.FDRecver, u string) (*os.File, error) {
	if err := Check(u); err != nil {
		return nil, err
	}
	if recv == nil {
		return nil, status.Errorf(codes.PermissionDenied,
			"fdpass: %s names a passed file, but the peer is not on a unix socket that passes descriptors; a peer hands over only a file it holds, sent beside the call", u)
	}
	files, err := recv.RecvFileByURL(u)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "fdpass: %s: %v", u, err)
	}
	timer := time.NewTimer(RecvTimeout)
	defer timer.Stop()
	select {
	case f, ok := <-files:
		if ok && f != nil {
			return f, nil
		}
		return nil, status.Errorf(codes.Unavailable, "fdpass: the connection closed before %s arrived", u)
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-timer.C:
		// A file that was sent arrives with the call; this one was not.
		return nil, status.Errorf(codes.PermissionDenied,
			"fdpass: %s was not sent beside the call; a peer hands over only a file it holds, sent as a descriptor (grpcfd) with every call that names it", u)
	}
}

// Files are the files one connection received, by inode URL. Safe for concurrent use.
type Files struct {
	mu    sync.Mutex
	byURL map[string]*os.File
}

// NewFiles returns an empty set.
func NewFiles() *Files { return &Files{byURL: map[string]*os.File{}} }

// Get returns the file u names, or nil.
func (f *Files) Get(u string) *os.File {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byURL[u]
}

// Put keeps file under u; a file kept under u before is closed.
func (f *Files) Put(u string, file *os.File) {
	f.mu.Lock()
	old := f.byURL[u]
	f.byURL[u] = file
	f.mu.Unlock()
	if old != nil && old != file {
		_ = old.Close()
	}
}

// Retain closes and forgets every file whose URL keep rejects.
func (f *Files) Retain(keep func(u string) bool) {
	f.mu.Lock()
	var drop []*os.File
	for u, file := range f.byURL {
		if !keep(u) {
			drop = append(drop, file)
			delete(f.byURL, u)
		}
	}
	f.mu.Unlock()
	for _, file := range drop {
		_ = file.Close()
	}
}

// Len is how many files are kept.
func (f *Files) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.byURL)
}

// Close closes every file; the set stays usable and empty.
func (f *Files) Close() { f.Retain(func(string) bool { return false }) }

type filesKey struct{}

// WithFiles returns ctx carrying files, the files the current event's connection received from
// the previous hop, for the elements after the caller.
func WithFiles(ctx context.Context, files *Files) context.Context {
	return context.WithValue(ctx, filesKey{}, files)
}

// FromContext returns the files put in ctx by WithFiles, or nil where no hop before in this
// process received any: the request started in this process.
func FromContext(ctx context.Context) *Files {
	f, _ := ctx.Value(filesKey{}).(*Files)
	return f
}

type sendKey struct{}

// WithSend returns ctx whose gRPC calls carry files beside them (named in the message by their
// inode URLs, URLOf), on a connection dialed with Interceptors; the files must stay open until
// the calls are made. For elements that have no call options to add per-RPC credentials to (the
// registry's).
func WithSend(ctx context.Context, files ...*os.File) context.Context {
	return context.WithValue(ctx, sendKey{}, files)
}

// Call learns the peer of one call, for receiving files from a stream's answers: pass it in
// the call's context (WithCall) on a connection dialed with Interceptors.
type Call struct {
	mu   sync.Mutex
	peer grpcfd.FDTransceiver
}

type callKey struct{}

// WithCall returns ctx in which a call, once started, makes c know its peer.
func WithCall(ctx context.Context, c *Call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

// Peer returns what receives files over the call's connection, or nil before the call started
// or when it cannot pass descriptors.
func (c *Call) Peer() grpcfd.FDTransceiver {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peer
}

// Interceptors returns the dial options that carry out WithSend and WithCall.
func Interceptors() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoke grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoke(ctx, method, req, reply, cc, withSend(ctx, opts)...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, stream grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := stream(ctx, desc, cc, method, withSend(ctx, opts)...)
			if c, ok := ctx.Value(callKey{}).(*Call); ok && err == nil {
				if p, ok := peer.FromContext(s.Context()); ok {
					c.mu.Lock()
					c.peer = PeerOf(p)
					c.mu.Unlock()
				}
			}
			return s, err
		}),
	}
}

// withSend adds to opts what sends the files ctx names (WithSend), if any.
func withSend(ctx context.Context, opts []grpc.CallOption) []grpc.CallOption {
	files, _ := ctx.Value(sendKey{}).([]*os.File)
	if len(files) == 0 {
		return opts
	}
	opts, sender := ForCall(opts)
	for _, f := range files {
		_ = sender.SendFile(f) // a file that does not go shows at the peer, which refuses the call
	}
	return opts
}

// Sockets are unix sockets received by descriptor (an endpoint's, a forwarder's), by inode URL,
// for Dialer. Safe for concurrent use.
type Sockets struct{ files *Files }

// NewSockets returns an empty table.
func NewSockets() *Sockets { return &Sockets{files: NewFiles()} }

// Put keeps the socket file under u, closing one kept there before.
func (s *Sockets) Put(u string, f *os.File) { s.files.Put(u, f) }

// Get returns the socket file u names, or nil.
func (s *Sockets) Get(u string) *os.File { return s.files.Get(u) }

// Forget closes and forgets the socket file u names.
func (s *Sockets) Forget(u string) { s.files.Retain(func(kept string) bool { return kept != u }) }

// Dialer returns a gRPC dial option that connects to the socket u names through its
// descriptor, whatever its path (none, or one in another mount namespace): Unavailable while
// the table has no such socket.
func (s *Sockets) Dialer(u string) grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		f := s.Get(u)
		if f == nil {
			return nil, status.Errorf(codes.Unavailable, "fdpass: no socket for %s: its descriptor did not come, or its registration is gone", u)
		}
		raw, err := f.SyscallConn()
		if err != nil {
			return nil, err
		}
		var conn net.Conn
		var dialErr error
		// Control keeps the descriptor open while it runs: its number cannot name another file.
		err = raw.Control(func(fd uintptr) {
			var d net.Dialer
			// The descriptor's own entry in /proc reaches the very socket it refers to.
			conn, dialErr = d.DialContext(ctx, "unix", fmt.Sprintf("/proc/self/fd/%d", fd))
		})
		if err != nil {
			return nil, err
		}
		return conn, dialErr
	})
}
