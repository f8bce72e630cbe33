// Package otlptest is an OTLP/gRPC collector for tests: it receives the spans (and takes the
// metrics) that sdk/pkg/tools/telemetry exports, on loopback, and lets a test wait for the spans
// it expects, so that tests check real exports from real processes without a collector binary.
package otlptest

import (
	"context"
	"encoding/hex"
	"net"
	"strconv"
	"sync"
	"testing"

	collmetric "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Span is a span as received, with what tests look at.
type Span struct {
	Service  string // the exporting process's service.name
	PID      string // and its process.pid
	Name     string
	TraceID  string // hex
	SpanID   string
	ParentID string            // "" for a root span
	Attrs    map[string]string // attribute values as text
	Failed   bool              // status Error
	Status   string            // the status message
}

// Receiver is a running collector.
type Receiver struct {
	addr    string
	mu      sync.Mutex
	spans   []Span
	count   int           // spans received, kept or not
	discard bool          // count spans without keeping them (benchmarks)
	changed chan struct{} // closed and replaced whenever spans arrive
}

// Start serves a collector on 127.0.0.1 until the test ends.
func Start(t testing.TB) *Receiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("otlptest: listen: %v", err)
	}
	return serve(t, lis, lis.Addr().String())
}

// StartUnix serves a collector on the unix socket path until the test ends: processes in other
// network namespaces reach it there.
func StartUnix(t testing.TB, path string) *Receiver {
	t.Helper()
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("otlptest: listen: %v", err)
	}
	return serve(t, lis, "unix://"+path)
}

// StartDiscarding serves a collector on 127.0.0.1 that counts the spans it receives and keeps
// none: a benchmark's exports cost what they cost, without the receiver's memory growing.
func StartDiscarding(t testing.TB) *Receiver {
	r := Start(t)
	r.discard = true
	return r
}

// Count is how many spans arrived.
func (r *Receiver) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

func serve(t testing.TB, lis net.Listener, addr string) *Receiver {
	r := &Receiver{addr: addr, changed: make(chan struct{})}
	srv := grpc.NewServer()
	colltrace.RegisterTraceServiceServer(srv, traces{r: r})
	collmetric.RegisterMetricsServiceServer(srv, metrics{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return r
}

// Endpoint is the collector's host:port or unix:///path, for NSM_OPEN_TELEMETRY_ENDPOINT.
func (r *Receiver) Endpoint() string { return r.addr }

// Spans returns every span received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Await returns the spans received once done says they are enough, or ctx's error with the
// spans received by then.
func (r *Receiver) Await(ctx context.Context, done func([]Span) bool) ([]Span, error) {
	for {
		r.mu.Lock()
		spans, changed := append([]Span(nil), r.spans...), r.changed
		r.mu.Unlock()
		if done(spans) {
			return spans, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return spans, ctx.Err()
		}
	}
}

type traces struct {
	colltrace.UnimplementedTraceServiceServer
	r *Receiver
}

func (s traces) Export(_ context.Context, req *colltrace.ExportTraceServiceRequest) (*colltrace.ExportTraceServiceResponse, error) {
	s.r.mu.Lock()
	discard := s.r.discard
	s.r.mu.Unlock()
	if discard {
		n := 0
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				n += len(ss.GetSpans())
			}
		}
		s.r.mu.Lock()
		s.r.count += n
		s.r.mu.Unlock()
		return &colltrace.ExportTraceServiceResponse{}, nil
	}
	var got []Span
	for _, rs := range req.GetResourceSpans() {
		resource := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				got = append(got, Span{
					Service:  resource["service.name"],
					PID:      resource["process.pid"],
					Name:     sp.GetName(),
					TraceID:  hex.EncodeToString(sp.GetTraceId()),
					SpanID:   hex.EncodeToString(sp.GetSpanId()),
					ParentID: hex.EncodeToString(sp.GetParentSpanId()),
					Attrs:    attrs(sp.GetAttributes()),
					Failed:   sp.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
					Status:   sp.GetStatus().GetMessage(),
				})
			}
		}
	}
	s.r.mu.Lock()
	s.r.count += len(got)
	s.r.spans = append(s.r.spans, got...)
	close(s.r.changed)
	s.r.changed = make(chan struct{})
	s.r.mu.Unlock()
	return &colltrace.ExportTraceServiceResponse{}, nil
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			out[kv.GetKey()] = v.GetStringValue()
		case *commonpb.AnyValue_IntValue:
			out[kv.GetKey()] = strconv.FormatInt(v.GetIntValue(), 10)
		case *commonpb.AnyValue_BoolValue:
			out[kv.GetKey()] = strconv.FormatBool(v.GetBoolValue())
		default:
			out[kv.GetKey()] = v.String()
		}
	}
	return out
}

// metrics takes metric exports, so that exporting processes do not log failures.
type metrics struct {
	collmetric.UnimplementedMetricsServiceServer
}

func (metrics) Export(context.Context, *collmetric.ExportMetricsServiceRequest) (*collmetric.ExportMetricsServiceResponse, error) {
	return &collmetric.ExportMetricsServiceResponse{}, nil
}
