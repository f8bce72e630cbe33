// Package sendfd sends, beside the gRPC call, the files a mechanism names (its inodeURL
// parameter, the KERNEL mechanism's network namespace), and names them by inode URL in the
// message, as NSM's clients and endpoints do: the client with every Request and Close, the server
// (an endpoint) with its answer.
//
// Which files a hop may send is the point (see sdk/pkg/tools/fdpass):
//   - A request that started in this process (no recvfd server before, fdpass.FromContext is
//     nil: a workload's client) names its own files by file:// path; the client opens each,
//     sends it and puts its inode URL in the message, and gives the caller its file:// URL
//     back in the answer, so the next call (a refresh, a Close) sends it again, as NSM's nsmgr
//     expects on every call of a connection.
//   - A request this process received (a passthrough hop: nsmgr, forwarder) is passed on with
//     the files that came with it: an inode URL whose file the connection holds is sent again;
//     a file:// path is passed on as it is and never opened here, so no peer makes this hop open
//     a path of its choosing.
//   - The server sends the file:// path of its answer's mechanism (the endpoint's own namespace)
//     when its caller is on a unix socket that passes descriptors. Over TCP neither side sends
//     anything (the client looks at the next hop's URL, clienturl.ClientURL, so it belongs
//     after the element that sets it) and paths stay paths.
//
// Guarantees: a file:// path that cannot be opened fails the call with InvalidArgument naming
// it, before anything is sent; the caller's request is left as it gave it (the inode URLs go
// into the message only for the call). Nothing is sent where nothing is named, so calls without
// such mechanisms (remote tunnels) cost nothing.
package sendfd

import (
	"context"
	"net/url"
	"time"

	"github.com/edwarnicke/grpcfd"
	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/common"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/hopurl"
)

// NewClient returns the element that sends the files a request names.
func NewClient() networkservice.NetworkServiceClient { return client{} }

type client struct{}

func (client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	mechs := append(req.GetMechanismPreferences(), req.GetConnection().GetMechanism())
	out, err := prepare(ctx, mechs)
	if err != nil {
		return nil, err
	}
	if out == nil {
		return next.Client(ctx).Request(ctx, req, opts...)
	}
	defer out.restore()
	conn, err := next.Client(ctx).Request(ctx, req, out.send(opts)...)
	if err != nil {
		return nil, err
	}
	out.back(conn.GetMechanism())
	return conn, nil
}

func (client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	out, err := prepare(ctx, []*networkservice.Mechanism{conn.GetMechanism()})
	if err != nil || out == nil {
		// Close is never refused: what cannot be sent is not needed to remove a connection.
		return next.Client(ctx).Close(ctx, conn, opts...)
	}
	defer out.restore()
	return next.Client(ctx).Close(ctx, conn, out.send(opts)...)
}

// outgoing is what one call sends, and how to put the caller's URLs back.
type outgoing struct {
	files  map[string]func(grpcfd.FDSender) <-chan error // by inode URL
	swaps  []swap
	inodes map[string]string // inode URL -> the caller's file:// URL
}

// swap is one parameter map whose URL was replaced for the call.
type swap struct {
	params   map[string]string
	original string
}

// prepare finds the files mechs name that this hop may send, and names them by inode URL. It
// returns nil when there is nothing to send.
func prepare(ctx context.Context, mechs []*networkservice.Mechanism) (*outgoing, error) {
	if hop := clienturl.ClientURL(ctx); hop == nil || (hop.Scheme != hopurl.Unix && hop.Scheme != fdpass.Scheme) {
		return nil, nil // only a unix socket (by path or passed by descriptor) carries descriptors
	}
	held := fdpass.FromContext(ctx)
	var out *outgoing
	for _, mech := range mechs {
		params := mech.GetParameters()
		u := params[common.InodeURL]
		if u == "" {
			continue
		}
		if out == nil {
			out = &outgoing{files: map[string]func(grpcfd.FDSender) <-chan error{}, inodes: map[string]string{}}
		}
		switch {
		case fdpass.IsURL(u) && held != nil:
			if f := held.Get(u); f != nil {
				out.files[u] = func(s grpcfd.FDSender) <-chan error { return s.SendFile(f) }
			}
		case held == nil:
			path, ok := ownPath(u)
			if !ok {
				continue
			}
			inode, err := fdpass.PathURL(path)
			if err != nil {
				out.restore()
				return nil, status.Errorf(codes.InvalidArgument, "sendfd: cannot send %s (mechanism parameter %s): %v", u, common.InodeURL, err)
			}
			out.files[inode] = func(s grpcfd.FDSender) <-chan error { return s.SendFilename(path) }
			out.swaps = append(out.swaps, swap{params: params, original: u})
			out.inodes[inode] = u
			params[common.InodeURL] = inode
		}
	}
	if out == nil || len(out.files) == 0 {
		out.restore()
		return nil, nil
	}
	return out, nil
}

// ownPath returns the path of a file:// URL.
func ownPath(u string) (string, bool) {
	parsed, err := url.Parse(u)
	if err != nil || parsed.Scheme != "file" || parsed.Path == "" {
		return "", false
	}
	return parsed.Path, true
}

// send queues the files for the call made with the returned options.
func (o *outgoing) send(opts []grpc.CallOption) []grpc.CallOption {
	opts, sender := fdpass.ForCall(opts)
	for _, f := range o.files {
		// A failure shows later, when the call goes out without the file: the next hop refuses it.
		_ = f(sender)
	}
	return opts
}

// restore puts the caller's URLs back into its request.
func (o *outgoing) restore() {
	if o == nil {
		return
	}
	for _, s := range o.swaps {
		s.params[common.InodeURL] = s.original
	}
	o.swaps = nil
}

// back gives the caller its own URL in the answer's mechanism.
func (o *outgoing) back(mech *networkservice.Mechanism) {
	if original, ok := o.inodes[mech.GetParameters()[common.InodeURL]]; ok {
		mech.GetParameters()[common.InodeURL] = original
	}
}

// NewServer returns the element that sends, with its answer, the file its mechanism names by
// path: the endpoint's own namespace.
func NewServer() networkservice.NetworkServiceServer { return server{} }

type server struct{}

// undoTimeout bounds the Close of a Request whose answer cannot be sent as it should.
const undoTimeout = 15 * time.Second

func (server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, err
	}
	sender := fdpass.Peer(ctx)
	params := conn.GetMechanism().GetParameters()
	path, ok := ownPath(params[common.InodeURL])
	if sender == nil || !ok {
		return conn, nil
	}
	inode, err := fdpass.PathURL(path)
	if err != nil {
		undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		_, _ = next.Server(undo).Close(undo, conn.Clone())
		return nil, status.Errorf(codes.Internal, "sendfd: cannot send this endpoint's %s (mechanism parameter %s): %v", params[common.InodeURL], common.InodeURL, err)
	}
	_ = sender.SendFilename(path) // a failure shows at the forwarder, which refuses the answer
	params[common.InodeURL] = inode
	return conn, nil
}

func (server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}
