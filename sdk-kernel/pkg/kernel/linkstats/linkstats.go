// Package linkstats reports the traffic of each vWire a kernel forwarder built, as OpenTelemetry
// counters read from the kernel's statistics of the forwarder's interfaces: bytes, packets and
// drops, each way, for the end facing the previous hop (in: the client's vWire, or the tunnel
// from the client's node) and the end facing the next hop (out: the endpoint's vWire, or the
// tunnel to the endpoint's node).
//
// Why: the kernel counts every frame an interface passes, for free; reading those counters when
// metrics are collected costs the data path nothing, and tells an operator which vWire carries
// traffic and which one drops it, by connection and network service.
//
// The element goes in the forwarder's chain right after xconnect (whose Ends it reads): after a
// successful Request it notes the connection's two interfaces (again at each refresh, as heal
// may have rebuilt an end), and Close forgets them. At each collection it lists the links of the
// forwarder's namespace once and reports, for every connection it knows:
//
//	vwire.link.io       counter  By        bytes the interface received or transmitted
//	vwire.link.packets  counter  {packet}  packets the interface received or transmitted
//	vwire.link.dropped  counter  {packet}  packets the kernel dropped on the interface
//
// with nsm.connection.id, nsm.network_service, network.interface.name, vwire.link.end (in, out)
// and network.io.direction (receive, transmit), each as the forwarder's interface sees it: what
// its in end receives is what the client sent. A connection whose interfaces are gone (being
// rebuilt) reports nothing until they are back; an interface made anew starts from zero, which
// counters' readers (Prometheus' rate) take as a reset. The counters end when ctx does.
//
// A connection's series are observed only while the element knows it, so they leave the next
// collection after its Close: they are bounded by the connections held. OpenTelemetry's SDK
// bounds them too, at 2000 attribute sets per instrument by default (OTEL_GO_X_CARDINALITY_LIMIT):
// a vWire is four of each counter, so a forwarder holding more than 499 reports the rest under
// otel.metric.overflow=true.
package linkstats

import (
	"context"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/metrics"
	"vwire.dev/sdk/pkg/networkservice/core/next"

	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/xconnect"
)

// Attribute keys of the counters, besides metrics.ServiceKey.
const (
	ConnectionKey = attribute.Key("nsm.connection.id")
	InterfaceKey  = attribute.Key("network.interface.name")
	EndKey        = attribute.Key("vwire.link.end")
	DirectionKey  = attribute.Key("network.io.direction")
)

// Option configures the element.
type Option func(*options)

type options struct {
	provider metric.MeterProvider
}

// WithMeterProvider reports to p instead of the process's global provider.
func WithMeterProvider(p metric.MeterProvider) Option { return func(o *options) { o.provider = p } }

// vwire is what the element knows of one connection: its interfaces in the forwarder's namespace.
type vwire struct {
	id, service string
	in, out     string // the ends' interfaces; empty while an end is missing
}

var vwireKey = metadata.NewKey[*vwire]("linkstats")

// NewServer returns the element reporting the traffic of the vWires whose interfaces are in the
// forwarder's namespace fwd (the caller's, open while ctx lives); the counters stop when ctx is
// done.
func NewServer(ctx context.Context, fwd netns.NsHandle, opts ...Option) networkservice.NetworkServiceServer {
	o := &options{provider: otel.GetMeterProvider()}
	for _, opt := range opts {
		opt(o)
	}
	s := &server{fwd: fwd, live: map[*vwire]struct{}{}}
	m := o.provider.Meter("vwire.dev/sdk-kernel/pkg/kernel/linkstats")
	var errs [4]error
	s.io, errs[0] = m.Int64ObservableCounter("vwire.link.io", metric.WithUnit("By"),
		metric.WithDescription("Bytes a vWire's interface in the forwarder received or transmitted"))
	s.packets, errs[1] = m.Int64ObservableCounter("vwire.link.packets", metric.WithUnit("{packet}"),
		metric.WithDescription("Packets a vWire's interface in the forwarder received or transmitted"))
	s.dropped, errs[2] = m.Int64ObservableCounter("vwire.link.dropped", metric.WithUnit("{packet}"),
		metric.WithDescription("Packets the kernel dropped on a vWire's interface in the forwarder"))
	var reg metric.Registration
	reg, errs[3] = m.RegisterCallback(s.observe, s.io, s.packets, s.dropped)
	metrics.HandleErrors(errs[:]...) // what the provider refused is not reported; the chain works on
	if reg != nil {
		context.AfterFunc(ctx, func() { _ = reg.Unregister() })
	}
	return s
}

// The element keeps the set of connections it knows besides their metadata: a collection has
// to visit them all, and metadata cannot be listed. Entries are made and dropped with the
// metadata's, so the set never outlives a connection.
type server struct {
	fwd                  netns.NsHandle
	io, packets, dropped metric.Int64ObservableCounter
	mu                   sync.Mutex
	live                 map[*vwire]struct{}
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn, err := next.Server(ctx).Request(ctx, req)
	ends := xconnect.FromContext(ctx)
	if err != nil || ends == nil {
		return conn, err
	}
	v := &vwire{id: conn.GetId(), service: conn.GetNetworkService(), in: nameOf(ends.In), out: nameOf(ends.Out)}
	m := metadata.Server(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := vwireKey.Load(m); ok {
		delete(s.live, old)
	}
	vwireKey.Store(m, v)
	s.live[v] = struct{}{}
	return conn, nil
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if v, ok := vwireKey.LoadAndDelete(metadata.Server(ctx)); ok {
		s.mu.Lock()
		delete(s.live, v)
		s.mu.Unlock()
	}
	return next.Server(ctx).Close(ctx, conn)
}

func nameOf(e *xconnect.End) string {
	if e == nil {
		return ""
	}
	return e.Name
}

var (
	receive  = DirectionKey.String("receive")
	transmit = DirectionKey.String("transmit")
)

// observe reports the statistics of every known vWire's interfaces, from one listing of the
// forwarder's links.
func (s *server) observe(_ context.Context, o metric.Observer) error {
	s.mu.Lock()
	vwires := make([]vwire, 0, len(s.live))
	for v := range s.live {
		vwires = append(vwires, *v)
	}
	s.mu.Unlock()
	if len(vwires) == 0 {
		return nil
	}
	h, err := netlink.NewHandleAt(s.fwd, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return err
	}
	stats := make(map[string]*netlink.LinkStatistics, len(links))
	for _, l := range links {
		if st := l.Attrs().Statistics; st != nil {
			stats[l.Attrs().Name] = st
		}
	}
	for _, v := range vwires {
		for _, end := range [...]struct{ side, name string }{{"in", v.in}, {"out", v.out}} {
			st, ok := stats[end.name]
			if end.name == "" || !ok {
				continue
			}
			base := []attribute.KeyValue{ConnectionKey.String(v.id), metrics.ServiceKey.String(v.service),
				InterfaceKey.String(end.name), EndKey.String(end.side)}
			rx := metric.WithAttributes(append(base, receive)...)
			tx := metric.WithAttributes(append(base, transmit)...)
			o.ObserveInt64(s.io, int64(st.RxBytes), rx)
			o.ObserveInt64(s.io, int64(st.TxBytes), tx)
			o.ObserveInt64(s.packets, int64(st.RxPackets), rx)
			o.ObserveInt64(s.packets, int64(st.TxPackets), tx)
			o.ObserveInt64(s.dropped, int64(st.RxDropped), rx)
			o.ObserveInt64(s.dropped, int64(st.TxDropped), tx)
		}
	}
	return nil
}
