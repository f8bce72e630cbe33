// Package xconnect joins, in the forwarder, the two ends of a connection that its mechanism
// elements made: the end facing the previous hop (the client's vWire, or the tunnel from the
// client's node) and the end facing the next hop (the endpoint's vWire, or the tunnel to the
// endpoint's node).
//
// How: the mechanism elements put their end in Ends (FromContext) when they have made it, through
// the helpers of mechanism.go (KeepServer, KeepClient, Forget, CloseServer, CloseClient), which
// also keep what they made in metadata and undo or remove it; after next returns, both ends are
// there and the element joins them in the forwarder's namespace:
//   - two ends of the same framing (veth and VXLAN carry Ethernet frames, for ETHERNET payload
//     and for IP payload alike; two TUN devices carry bare packets): a tc redirect both ways
//     (sdk-kernel/pkg/kernel/xconnect);
//   - a vWire and a device without a link layer (WireGuard): routing between them, with the
//     connection's own tables (sdk-kernel/pkg/kernel/l3xconnect);
//   - anything else fails with FailedPrecondition, naming both ends.
//
// Place: in the forwarder's server chain after metadata and before the mechanism elements of
// both sides (the server's mechanisms element, and connect with the client chain): they make
// their ends after their own next returned, so only an element before them sees both ends.
//
// Adoption: the ends are the forwarder's own (named by ifname), so a join finds on them only
// what a previous run of the forwarder made. A redirect that joins the two ends already (a
// restarted forwarder, its ends adopted) is kept as it is, with no filter replaced; anything
// else on them is removed and the join made anew. l3xconnect keeps the rules and routes it finds.
//
// Guarantees: a join that fails after next succeeded closes downstream (with the caller's values
// and a fresh deadline) and returns the error. A refresh keeps the join while both ends are the
// ones joined; when a mechanism element replaced an end (heal found another endpoint, say) the old
// join is removed and the new one made. Close removes the join before calling next (which removes
// the ends), and always calls next.
package xconnect

import (
	"context"
	"errors"
	"fmt"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"

	"vwire.dev/sdk-kernel/pkg/kernel/ipconfig"
	"vwire.dev/sdk-kernel/pkg/kernel/l3xconnect"
	kxconnect "vwire.dev/sdk-kernel/pkg/kernel/xconnect"
)

// End is one end of a connection in the forwarder's namespace.
type End struct {
	Name     string    // the interface, in the forwarder's namespace
	L3       bool      // it carries bare IP packets (TUN, WireGuard), not Ethernet frames
	Workload *Workload // for the forwarder's end of a vWire: where the workload's end is
}

// Workload is the workload's side of a vWire, which routing to it needs.
type Workload struct {
	NetNS netns.NsHandle            // the workload's namespace, held by the mechanism element
	Name  string                    // the workload's end
	Side  ipconfig.Side             // which end of the connection the workload is
	IP    *networkservice.IPContext // the connection's IP context
}

// Ends are the two ends of one connection. A mechanism element sets In (facing the previous
// hop) or Out (facing the next hop) when it has made its end, to an End it made, and sets it to
// nil when it removed it; a new End (a new pointer) tells xconnect that the end was made anew.
type Ends struct {
	In, Out *End
}

type endsKey struct{}

// FromContext returns the Ends of the connection whose event ctx belongs to, or nil outside a
// chain with xconnect before the caller.
func FromContext(ctx context.Context) *Ends {
	e, _ := ctx.Value(endsKey{}).(*Ends)
	return e
}

// joined is the join made for a connection: the two ends as they were when joined.
type joined struct {
	in, out *End
}

var (
	endsMeta   = metadata.NewKey[*Ends]("xconnect ends")
	joinedMeta = metadata.NewKey[*joined]("xconnect joined")
)

// NewServer returns the element that joins the ends of each connection in the forwarder's
// namespace fwd. fwd stays the caller's: it must stay open while the element is used.
func NewServer(fwd netns.NsHandle) networkservice.NetworkServiceServer {
	return &server{fwd: fwd}
}

type server struct {
	fwd netns.NsHandle
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	m := metadata.Server(ctx)
	ends, _ := endsMeta.LoadOrStore(m, &Ends{})
	_, refresh := joinedMeta.Load(m)
	conn, err := next.Server(ctx).Request(context.WithValue(ctx, endsKey{}, ends), req)
	if err != nil {
		return nil, err
	}
	if err := s.update(m, ends, conn.GetId()); err != nil {
		if refresh {
			return nil, err // the connection stands as it was; the caller decides
		}
		undoServer(context.WithValue(ctx, endsKey{}, ends), conn)
		return nil, err
	}
	return conn, nil
}

// update joins the ends of connection id unless they are joined already.
func (s *server) update(m *metadata.Map, ends *Ends, id string) error {
	j, ok := joinedMeta.Load(m)
	if ok && j.in == ends.In && j.out == ends.Out {
		return nil
	}
	if ok {
		if err := s.unjoin(j, id); err != nil {
			return err
		}
		joinedMeta.Delete(m)
	}
	if ends.In == nil || ends.Out == nil {
		return status.Errorf(codes.Internal,
			"xconnect: connection %s has no end facing the %s; the forwarder's chain lacks a mechanism element for it", id, missing(ends))
	}
	if err := s.join(ends.In, ends.Out, id); err != nil {
		return err
	}
	joinedMeta.Store(m, &joined{in: ends.In, out: ends.Out})
	return nil
}

func missing(ends *Ends) string {
	if ends.In == nil {
		return "previous hop"
	}
	return "next hop"
}

func (s *server) join(in, out *End, id string) error {
	if in.L3 == out.L3 {
		// A restarted forwarder finds the redirects its previous run made: kept, they drop no packet.
		if kept, err := kxconnect.Adopt(s.fwd, in.Name, out.Name); err != nil || kept {
			return wrap(err)
		}
		if err := kxconnect.Delete(s.fwd, in.Name, out.Name); err != nil {
			return wrap(err)
		}
		return wrap(kxconnect.Create(s.fwd, in.Name, out.Name))
	}
	veth, l3 := in, out
	if in.L3 {
		veth, l3 = out, in
	}
	if veth.Workload == nil {
		return status.Errorf(codes.FailedPrecondition,
			"xconnect: cannot join %q (Ethernet) with %q (bare IP): routing needs a vWire on one side", veth.Name, l3.Name)
	}
	return wrap(l3xconnect.Create(s.fwd, l3xconnect.Veth{
		Name:         veth.Name,
		Workload:     veth.Workload.NetNS,
		WorkloadName: veth.Workload.Name,
		Side:         veth.Workload.Side,
		IP:           veth.Workload.IP,
	}, l3.Name, id))
}

func (s *server) unjoin(j *joined, id string) error {
	if j.in.L3 == j.out.L3 {
		return wrap(kxconnect.Delete(s.fwd, j.in.Name, j.out.Name))
	}
	veth, l3 := j.in, j.out
	if j.in.L3 {
		veth, l3 = j.out, j.in
	}
	return wrap(l3xconnect.Delete(s.fwd, veth.Name, l3.Name, id))
}

// wrap names the element in front of a kernel error; the error keeps its code.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("xconnect: %w", err)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	m := metadata.Server(ctx)
	ends, _ := endsMeta.LoadOrStore(m, &Ends{})
	var unjoinErr error
	if j, ok := joinedMeta.LoadAndDelete(m); ok {
		unjoinErr = s.unjoin(j, conn.GetId())
	}
	resp, err := next.Server(ctx).Close(context.WithValue(ctx, endsKey{}, ends), conn)
	return result(resp, errors.Join(unjoinErr, err))
}
