// Package telemetry installs a command's OpenTelemetry providers from its configuration: traces
// and metrics exported over OTLP/gRPC to a collector, and metrics served to Prometheus over
// HTTP. Chain elements and tools record through OpenTelemetry's global API (otel.Tracer,
// otel.Meter), so they reach whatever Setup installed, and nothing when it installed nothing.
//
// Every command gets it through sdk/pkg/tools/envconfig: Config is part of envconfig.Common,
// and envconfig.Command calls Setup before Run and Shutdown after. The variables are NSM's:
//   - NSM_OPEN_TELEMETRY_ENDPOINT (host:port) turns OTLP export on; TELEMETRY=true, NSM's own
//     switch, turns it on too, to NSM's default collector when no endpoint is set, and
//     TELEMETRY=false keeps it off. NSM_METRICS_EXPORT_INTERVAL is how often metrics go.
//   - PROMETHEUS=true serves the metrics at http://NSM_PROMETHEUS_LISTEN_ON/metrics (TLS with
//     NSM_PROMETHEUS_CERT_FILE and _KEY_FILE, client certificates checked with _CA_FILE).
//
// Guarantees callers rely on:
//   - Off costs nothing: with neither on, Setup installs no provider (the global ones stay
//     OpenTelemetry's no-ops), chains are built unwrapped, and ServerOptions and DialOptions are
//     empty, so no gRPC stats handler runs.
//   - With OTLP on, Tracing() is true: chains built afterwards wrap every element in a span
//     (sdk/pkg/networkservice/core/trace), and the otelgrpc stats handlers of ServerOptions and
//     DialOptions carry the W3C trace context in gRPC metadata, so one Request is one trace
//     across every process of its path. A collector that is down loses spans, never a call.
//   - Bad configuration is an error at start: Endpoint's Decode names the form it wants, and
//     Setup fails, leaving nothing installed or listening, when the Prometheus address cannot
//     be listened on or its certificate files cannot be read.
//   - Shutdown flushes what was recorded (spans batched, the last metrics), stops serving, and
//     puts the no-op providers back.
package telemetry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprometheus "go.opentelemetry.io/otel/exporters/prometheus"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/core/trace"
	"vwire.dev/sdk/pkg/tools/log"
)

// NSMCollector is where NSM's commands export when TELEMETRY=true and no endpoint is set.
const NSMCollector = "otel-collector.observability.svc.cluster.local:4317"

// Config is the telemetry configuration every command reads (through envconfig.Common).
type Config struct {
	OpenTelemetryEndpoint         Endpoint      `split_words:"true" desc:"the OpenTelemetry collector to export traces and metrics to, over OTLP/gRPC without TLS: host:port (http://host:port and unix:///path also work); set, it turns export on, unless TELEMETRY=false"`
	Telemetry                     Switch        `env:"TELEMETRY" desc:"NSM's switch for OTLP export: true exports (to NSM_OPEN_TELEMETRY_ENDPOINT, else NSM's default otel-collector.observability.svc.cluster.local:4317), false exports nothing; unset, export follows NSM_OPEN_TELEMETRY_ENDPOINT"`
	MetricsExportInterval         time.Duration `default:"10s" split_words:"true" desc:"how often metrics are exported over OTLP"`
	Prometheus                    bool          `env:"PROMETHEUS" default:"false" desc:"serve metrics for Prometheus at http://NSM_PROMETHEUS_LISTEN_ON/metrics (NSM's switch)"`
	PrometheusListenOn            string        `default:":8081" split_words:"true" desc:"where the Prometheus endpoint listens, host:port (:port for every address)"`
	PrometheusCertFile            string        `split_words:"true" desc:"with NSM_PROMETHEUS_KEY_FILE, serve the Prometheus endpoint over TLS with this certificate (PEM); both files are read again at each TLS handshake, so a renewed certificate is used at once"`
	PrometheusKeyFile             string        `split_words:"true" desc:"the key of NSM_PROMETHEUS_CERT_FILE (PEM)"`
	PrometheusCAFile              string        `split_words:"true" desc:"with TLS, ask scrapers for a client certificate signed by these CAs (PEM)"`
	PrometheusServerHeaderTimeout time.Duration `default:"5s" split_words:"true" desc:"how long the Prometheus endpoint waits for a request's headers"`
	PrometheusMonitorCertificate  bool          `split_words:"true" unused:"the certificate is read at each TLS handshake, so a renewed one is always used" desc:"watch the certificate files for renewals"`
	PrometheusMaxBindThreshold    time.Duration `split_words:"true" unused:"the address is listened on once, at start: a command whose address is taken stops with an error naming it" desc:"how long to retry listening on an address in use"`
}

// Collector is where OTLP goes, "" for nowhere.
func (c Config) Collector() string {
	switch {
	case c.Telemetry == Off:
		return ""
	case c.OpenTelemetryEndpoint != "":
		return string(c.OpenTelemetryEndpoint)
	case c.Telemetry == On:
		return NSMCollector
	}
	return ""
}

// Endpoint is a collector's address for OTLP/gRPC: host:port, or http://host:port as the
// OpenTelemetry SDKs write it, or unix:///path (vwire's; NSM's take host:port only): a unix socket
// reaches a collector from every network namespace of a node, as the local mesh has them.
type Endpoint string

// Decode implements envconfig's decoder.
func (e *Endpoint) Decode(value string) error {
	v := strings.TrimSpace(value)
	if v == "" {
		*e = ""
		return nil
	}
	if path, ok := strings.CutPrefix(v, "unix://"); ok {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "?#") {
			return errors.New("a unix socket is unix:///absolute/path")
		}
		*e = Endpoint("unix://" + filepath.Clean(path))
		return nil
	}
	if rest, ok := strings.CutPrefix(v, "http://"); ok {
		v = strings.TrimSuffix(rest, "/")
	} else if strings.Contains(v, "://") {
		return errors.New("OTLP/gRPC without TLS is host:port, http://host:port or unix:///path; other schemes (https, grpc) are not supported")
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("want host:port, as in %s: %v", NSMCollector, err)
	}
	if host == "" {
		return errors.New("no host; want host:port, as in " + NSMCollector)
	}
	if strings.ContainsAny(host, "/?#@ ") {
		return fmt.Errorf("host %q is not a host name or an IP address", host)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	*e = Endpoint(net.JoinHostPort(host, port))
	return nil
}

// TypeName implements envconfig.Value.
func (Endpoint) TypeName() string { return "host:port" }

// Switch is a boolean that may be unset: NSM's TELEMETRY.
type Switch int8

// The values of a Switch.
const (
	Unset Switch = iota
	On
	Off
)

// Decode implements envconfig's decoder: strconv.ParseBool's words, as NSM reads them.
func (s *Switch) Decode(value string) error {
	if strings.TrimSpace(value) == "" {
		*s = Unset
		return nil
	}
	b, err := strconv.ParseBool(strings.TrimSpace(value))
	if err != nil {
		return errors.New("want true or false")
	}
	*s = Off
	if b {
		*s = On
	}
	return nil
}

// TypeName implements envconfig.Value.
func (Switch) TypeName() string { return "bool" }

func (s Switch) String() string {
	switch s {
	case On:
		return "true"
	case Off:
		return "false"
	}
	return ""
}

var tracing atomic.Bool

// Tracing reports whether traces are exported: chains built now are traced, and ServerOptions
// and DialOptions carry the trace context.
func Tracing() bool { return tracing.Load() }

// ServerOptions are what a gRPC server needs to continue its callers' traces: otelgrpc's stats
// handler (health checks left out), when Tracing; none otherwise. sdk/pkg/tools/grpcserve adds
// them to every server.
func ServerOptions() []grpc.ServerOption {
	if !Tracing() {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithFilter(filters.Not(filters.HealthCheck()))))}
}

// DialOptions are what a gRPC client needs to carry its trace to the server: otelgrpc's stats
// handler, and interceptors that tell the calling element's span that an error came from the
// next hop (trace.PassedOn), when Tracing; none otherwise. The dial element and the registry
// client add them to every connection.
func DialOptions() []grpc.DialOption {
	if !Tracing() {
		return nil
	}
	return []grpc.DialOption{
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithFilter(filters.Not(filters.HealthCheck())))),
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoke grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			err := invoke(ctx, method, req, reply, cc, opts...)
			trace.PassedOn(ctx, err)
			return err
		}),
		// A stream's error (a registry Find's) comes at a read, not when the stream opens.
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				trace.PassedOn(ctx, err)
				return nil, err
			}
			return passingOn{s, ctx}, nil
		}),
	}
}

// passingOn is a client stream whose failed reads tell the step of the element that opened it.
type passingOn struct {
	grpc.ClientStream
	opened context.Context
}

func (s passingOn) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil && !errors.Is(err, io.EOF) { // io.EOF: the stream ended well
		trace.PassedOn(s.opened, err)
	}
	return err
}

// TraceID is the ID of the trace ctx's span belongs to, "" when it has none: what a user looks
// up in Jaeger.
func TraceID(ctx context.Context) string {
	if sc := oteltrace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

// StartTrace begins a trace of its own for what ctx is used for next (a client's Request), named
// name, when traces are exported, and logs its ID at INFO with attrs (slog key-value pairs), so
// that a person can look the trace up (in Jaeger: /trace/ID); end ends it with the call's
// error. Without traces it returns ctx and an end that does nothing.
func StartTrace(ctx context.Context, name string, attrs ...any) (_ context.Context, end func(error)) {
	if !Tracing() {
		return ctx, func(error) {}
	}
	ctx, span := otel.Tracer("vwire.dev/sdk/pkg/tools/telemetry").Start(ctx, name, oteltrace.WithNewRoot())
	log.FromContext(ctx).Info(name, append(attrs, "trace_id", span.SpanContext().TraceID().String())...)
	return ctx, func(err error) {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// Telemetry is what Setup installed.
type Telemetry struct {
	traces   *sdktrace.TracerProvider
	metrics  *sdkmetric.MeterProvider
	server   *http.Server
	listener net.Listener
	served   chan error
}

// Setup installs the providers c asks for, for the command named service (the service.name of
// every span and metric), and, with Prometheus, listens before it returns. With nothing on it
// installs nothing and returns a Telemetry whose Shutdown does nothing.
func Setup(ctx context.Context, service string, c Config) (*Telemetry, error) {
	t := &Telemetry{}
	collector := c.Collector()
	if collector == "" && !c.Prometheus {
		return t, nil
	}
	// The process ID tells apart the hops of one trace that run the same command (two nsmgrs).
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", service), attribute.Int("process.pid", os.Getpid())))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	var readers []sdkmetric.Option
	if c.Prometheus {
		reader, err := t.listen(c)
		if err != nil {
			return nil, err
		}
		readers = append(readers, sdkmetric.WithReader(reader))
	}
	if collector != "" {
		spans, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(collector), otlptracegrpc.WithInsecure())
		if err != nil {
			t.stopServing()
			return nil, fmt.Errorf("telemetry: OTLP traces to %s: %w", collector, err)
		}
		points, err := otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpoint(collector), otlpmetricgrpc.WithInsecure())
		if err != nil {
			_ = spans.Shutdown(ctx)
			t.stopServing()
			return nil, fmt.Errorf("telemetry: OTLP metrics to %s: %w", collector, err)
		}
		readers = append(readers, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(points, sdkmetric.WithInterval(c.MetricsExportInterval))))
		t.traces = sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans), sdktrace.WithResource(res))
		otel.SetTracerProvider(t.traces)
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
		tracing.Store(true)
	}
	t.metrics = sdkmetric.NewMeterProvider(append(readers, sdkmetric.WithResource(res))...)
	otel.SetMeterProvider(t.metrics)
	otel.SetErrorHandler(&exportErrors{logged: map[string]time.Time{}})
	return t, nil
}

// exportErrors logs what OpenTelemetry could not do (a collector down, one that takes traces
// but not metrics, as Jaeger) at WARN, each message at most once in repeatAfter: an export fails
// again at every interval, and with a collector down the traces' and the metrics' failures come
// in turn, so remembering only the last message would log each of them every time.
type exportErrors struct {
	mu     sync.Mutex
	logged map[string]time.Time // message -> when it was logged, within repeatAfter
}

// repeatAfter is how long a failure that goes on stays unlogged: long enough not to flood a
// log, short enough that a reader of the last minutes of a long outage sees it again.
const repeatAfter = 10 * time.Minute

func (e *exportErrors) Handle(err error) {
	msg, now := err.Error(), time.Now()
	e.mu.Lock()
	for m, at := range e.logged {
		if now.Sub(at) >= repeatAfter {
			delete(e.logged, m)
		}
	}
	_, repeated := e.logged[msg]
	if !repeated {
		e.logged[msg] = now
	}
	e.mu.Unlock()
	if !repeated {
		slog.Warn("telemetry: export failed; the same failure is not logged again for "+repeatAfter.String(), "error", err)
	}
}

// listen starts the Prometheus endpoint and returns the reader that feeds it.
func (t *Telemetry) listen(c Config) (sdkmetric.Reader, error) {
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reader, err := otelprometheus.New(otelprometheus.WithRegisterer(registry))
	if err != nil {
		return nil, fmt.Errorf("telemetry: Prometheus exporter: %w", err)
	}
	tlsConfig, err := serverTLS(c)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", c.PrometheusListenOn)
	if err != nil {
		return nil, fmt.Errorf("telemetry: NSM_PROMETHEUS_LISTEN_ON=%q: %w; set another host:port, or PROMETHEUS=false", c.PrometheusListenOn, err)
	}
	if tlsConfig != nil {
		lis = tls.NewListener(lis, tlsConfig)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	t.listener = lis
	t.server = &http.Server{Handler: mux, ReadHeaderTimeout: c.PrometheusServerHeaderTimeout}
	t.served = make(chan error, 1)
	go func() { t.served <- t.server.Serve(lis) }()
	return reader, nil
}

// serverTLS is the Prometheus endpoint's TLS configuration, nil without a certificate.
func serverTLS(c Config) (*tls.Config, error) {
	if (c.PrometheusCertFile == "") != (c.PrometheusKeyFile == "") {
		return nil, errors.New("telemetry: NSM_PROMETHEUS_CERT_FILE and NSM_PROMETHEUS_KEY_FILE go together: set both for TLS, or neither")
	}
	if c.PrometheusCertFile == "" {
		if c.PrometheusCAFile != "" {
			return nil, errors.New("telemetry: NSM_PROMETHEUS_CA_FILE needs TLS: set NSM_PROMETHEUS_CERT_FILE and NSM_PROMETHEUS_KEY_FILE too")
		}
		return nil, nil
	}
	load := func() (*tls.Certificate, error) {
		cert, err := tls.LoadX509KeyPair(c.PrometheusCertFile, c.PrometheusKeyFile)
		if err != nil {
			return nil, fmt.Errorf("telemetry: NSM_PROMETHEUS_CERT_FILE=%q, NSM_PROMETHEUS_KEY_FILE=%q: %w", c.PrometheusCertFile, c.PrometheusKeyFile, err)
		}
		return &cert, nil
	}
	if _, err := load(); err != nil {
		return nil, err
	}
	config := &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return load() }}
	if c.PrometheusCAFile != "" {
		pem, err := os.ReadFile(c.PrometheusCAFile)
		if err != nil {
			return nil, fmt.Errorf("telemetry: NSM_PROMETHEUS_CA_FILE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("telemetry: NSM_PROMETHEUS_CA_FILE=%q holds no PEM certificate", c.PrometheusCAFile)
		}
		config.ClientCAs = pool
		config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return config, nil
}

// PrometheusAddr is the address the Prometheus endpoint listens on, nil when it does not.
func (t *Telemetry) PrometheusAddr() net.Addr {
	if t.listener == nil {
		return nil
	}
	return t.listener.Addr()
}

func (t *Telemetry) stopServing() {
	if t.server != nil {
		_ = t.server.Close()
		<-t.served
	}
}

// Flush exports the spans recorded and not yet sent; ctx bounds it.
func (t *Telemetry) Flush(ctx context.Context) error {
	if t.traces == nil {
		return nil
	}
	return t.traces.ForceFlush(ctx)
}

// Shutdown exports what is recorded and not yet sent, stops the Prometheus endpoint, and puts
// OpenTelemetry's no-op providers back; ctx bounds the export. A second Shutdown does nothing.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	if t.traces != nil {
		tracing.Store(false)
		errs = append(errs, t.traces.Shutdown(ctx))
		otel.SetTracerProvider(tracenoop.NewTracerProvider())
		t.traces = nil
	}
	if t.metrics != nil {
		errs = append(errs, t.metrics.Shutdown(ctx))
		otel.SetMeterProvider(metricnoop.NewMeterProvider())
		t.metrics = nil
	}
	if t.server != nil {
		errs = append(errs, t.server.Shutdown(ctx))
		if err := <-t.served; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
		t.server = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("telemetry: shutdown: %w", err)
	}
	return nil
}
