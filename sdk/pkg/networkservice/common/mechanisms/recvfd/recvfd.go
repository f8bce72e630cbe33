// Package recvfd receives the files a mechanism names by inode URL (its inodeURL parameter, the
// KERNEL mechanism's network namespace): the server from the previous hop, with its Request
// (a client's namespace), the client from the next hop, with its answer (an endpoint's
// namespace). The files are the connection's, kept in its metadata from the first Request that
// brought them until Close, and offered to the elements after this one: the server's by
// fdpass.FromContext (a forwarder's kernel element opens the namespace from it; the connect
// element's client chain sends it on to the next hop), the client's by ClientFiles.
//
// Why: a hop must use a namespace only if the peer that named it holds it, and NSM's peers prove
// that by sending the descriptor beside the call (grpcfd); see sdk/pkg/tools/fdpass.
//
// Guarantees:
//   - The server refuses a Request naming an inode URL whose file it neither holds for the
//     connection nor receives with the call: PermissionDenied, before next, so nothing is made.
//     A file already held is used as it is, so a refresh or a re-entry by heal or timeout (which
//     has no peer of its own) needs no new descriptor; one NSM's clients send anyway is not read.
//   - The client receives only a file the request did not name (a passthrough hop's answer
//     names the client's own namespace again). It fails a first Request whose answer names an
//     inode URL it does not receive
//     (PermissionDenied) after closing what next opened (the caller's values, a fresh deadline);
//     a refresh that fails so returns the error and keeps the connection.
//   - Files not named by the connection's mechanism once a Request returns (preferences not
//     taken) are closed then; all are closed when the first Request fails and on Close, after
//     next, which may still use them.
//
// Place: the server after metadata and before the elements that use the files; the client after
// metadata and after the elements that use the answer's files (they run after it on the way
// back), before connect.
package recvfd

import (
	"context"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/common"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/fdpass"
)

var (
	serverKey = metadata.NewKey[*fdpass.Files]("recvfd server")
	clientKey = metadata.NewKey[*fdpass.Files]("recvfd client")
)

// NewServer returns the element that receives the files named in a Request.
func NewServer() networkservice.NetworkServiceServer { return server{} }

type server struct{}

func (server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	m := metadata.Server(ctx)
	files, held := serverKey.LoadOrStore(m, fdpass.NewFiles())
	forget := func() {
		if !held {
			serverKey.Delete(m)
			files.Close()
		}
	}
	for _, mech := range append(req.GetMechanismPreferences(), req.GetConnection().GetMechanism()) {
		u := mech.GetParameters()[common.InodeURL]
		if !fdpass.IsURL(u) || files.Get(u) != nil {
			continue
		}
		f, err := fdpass.Receive(ctx, fdpass.Peer(ctx), u)
		if err != nil {
			forget()
			return nil, err
		}
		files.Put(u, f)
	}
	conn, err := next.Server(ctx).Request(fdpass.WithFiles(ctx, files), req)
	if err != nil {
		forget()
		return nil, err
	}
	keepTaken(files, conn)
	return conn, nil
}

func (server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	files, ok := serverKey.LoadAndDelete(metadata.Server(ctx))
	if !ok {
		files = fdpass.NewFiles()
	}
	defer files.Close()
	return next.Server(ctx).Close(fdpass.WithFiles(ctx, files), conn)
}

// keepTaken closes the files of preferences not taken: all but the one the connection's
// mechanism names, if it names one of them (a hop that passes the next hop's mechanism back
// names a file of the next hop's instead; then all are kept).
func keepTaken(files *fdpass.Files, conn *networkservice.Connection) {
	taken := conn.GetMechanism().GetParameters()[common.InodeURL]
	if files.Get(taken) != nil {
		files.Retain(func(u string) bool { return u == taken })
	}
}

// NewClient returns the element that receives the file named in the next hop's answer.
func NewClient() networkservice.NetworkServiceClient { return client{} }

type client struct{}

// undoTimeout bounds the Close of a first Request whose file did not come.
const undoTimeout = 15 * time.Second

func (client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	asked := map[string]bool{}
	for _, mech := range append(req.GetMechanismPreferences(), req.GetConnection().GetMechanism()) {
		asked[mech.GetParameters()[common.InodeURL]] = true
	}
	var p peer.Peer
	conn, err := next.Client(ctx).Request(ctx, req, append(opts, grpc.Peer(&p))...)
	if err != nil {
		return nil, err
	}
	m := metadata.Client(ctx)
	files, held := clientKey.LoadOrStore(m, fdpass.NewFiles())
	u := conn.GetMechanism().GetParameters()[common.InodeURL]
	// A URL the request named is this hop's own (or its caller's) file coming back: nothing new.
	if fdpass.IsURL(u) && !asked[u] && files.Get(u) == nil {
		f, err := fdpass.Receive(ctx, fdpass.PeerOf(&p), u)
		if err != nil {
			if !held {
				clientKey.Delete(m)
				files.Close()
				undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
				defer cancel()
				_, _ = next.Client(undo).Close(undo, conn, opts...)
			}
			return nil, err
		}
		files.Put(u, f)
	}
	keepTaken(files, conn)
	return conn, nil
}

func (client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	if files, ok := clientKey.LoadAndDelete(metadata.Client(ctx)); ok {
		defer files.Close()
	}
	return next.Client(ctx).Close(ctx, conn, opts...)
}

// ClientFiles returns the files the connection of the client chain ctx is in received from the
// next hop, or nil before its first answer.
func ClientFiles(ctx context.Context) *fdpass.Files {
	files, _ := clientKey.Load(metadata.Client(ctx))
	return files
}
