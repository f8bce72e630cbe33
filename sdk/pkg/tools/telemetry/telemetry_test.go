package telemetry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/telemetry"
	"vwire.dev/sdk/pkg/tools/telemetry/otlptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOffInstallsNothing(t *testing.T) {
	before := otel.GetTracerProvider()
	tel, err := telemetry.Setup(context.Background(), "cmd-test", telemetry.Config{OpenTelemetryEndpoint: "127.0.0.1:4317", Telemetry: telemetry.Off})
	require.NoError(t, err)
	require.False(t, telemetry.Tracing())
	require.Nil(t, telemetry.ServerOptions(), "no stats handler on servers")
	require.Nil(t, telemetry.DialOptions(), "no stats handler on clients")
	require.Nil(t, tel.PrometheusAddr())
	require.Equal(t, before, otel.GetTracerProvider(), "no tracer provider installed")
	var logs bytes.Buffer
	ctx, end := telemetry.StartTrace(log.WithLogger(context.Background(), slog.New(slog.NewTextHandler(&logs, nil))), "nsc.Request")
	end(nil)
	require.Empty(t, telemetry.TraceID(ctx), "no trace begins")
	require.Empty(t, logs.String(), "and none is logged")
	require.NoError(t, tel.Shutdown(context.Background()))
}

func TestCollector(t *testing.T) {
	for _, tc := range []struct {
		c    telemetry.Config
		want string
	}{
		{telemetry.Config{}, ""},
		{telemetry.Config{OpenTelemetryEndpoint: "collector:4317"}, "collector:4317"},
		{telemetry.Config{OpenTelemetryEndpoint: "collector:4317", Telemetry: telemetry.On}, "collector:4317"},
		{telemetry.Config{OpenTelemetryEndpoint: "collector:4317", Telemetry: telemetry.Off}, ""},
		{telemetry.Config{Telemetry: telemetry.On}, telemetry.NSMCollector},
	} {
		require.Equal(t, tc.want, tc.c.Collector(), "%+v", tc.c)
	}
}

// TestSpansReachTheCollector: with an endpoint, spans go over OTLP/gRPC, named for the
// command, and Shutdown sends what is batched.
func TestSpansReachTheCollector(t *testing.T) {
	t.Run("tcp", func(t *testing.T) { spansReach(t, otlptest.Start(t)) })
	t.Run("unix", func(t *testing.T) {
		dir, err := os.MkdirTemp("", "vw")
		require.NoError(t, err)
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		spansReach(t, otlptest.StartUnix(t, filepath.Join(dir, "otlp.sock")))
	})
}

func spansReach(t *testing.T, collector *otlptest.Receiver) {
	tel, err := telemetry.Setup(context.Background(), "cmd-test", telemetry.Config{
		OpenTelemetryEndpoint: telemetry.Endpoint(collector.Endpoint()), MetricsExportInterval: time.Hour})
	require.NoError(t, err)
	require.True(t, telemetry.Tracing())
	require.Len(t, telemetry.ServerOptions(), 1)
	require.Len(t, telemetry.DialOptions(), 3)

	var logs bytes.Buffer
	ctx := log.WithLogger(context.Background(), slog.New(slog.NewTextHandler(&logs, nil)))
	ctx, end := telemetry.StartTrace(ctx, "nsc.Request", "service", "icmp-responder")
	id := telemetry.TraceID(ctx)
	require.Len(t, id, 32)
	require.Contains(t, logs.String(), "level=INFO msg=nsc.Request service=icmp-responder trace_id="+id)
	end(errors.New("no endpoint"))
	require.NoError(t, tel.Shutdown(context.Background()))
	require.False(t, telemetry.Tracing())
	require.Empty(t, telemetry.TraceID(context.Background()))

	spans := collector.Spans()
	require.Len(t, spans, 1)
	require.Equal(t, "nsc.Request", spans[0].Name)
	require.True(t, spans[0].Failed)
	require.Equal(t, "no endpoint", spans[0].Status)
	require.Equal(t, "cmd-test", spans[0].Service)
	require.Equal(t, strconv.Itoa(os.Getpid()), spans[0].PID)
	require.Equal(t, id, spans[0].TraceID)
}

func TestPrometheusServesMetrics(t *testing.T) {
	tel, err := telemetry.Setup(context.Background(), "cmd-test", telemetry.Config{
		Prometheus: true, PrometheusListenOn: "127.0.0.1:0", PrometheusServerHeaderTimeout: time.Second})
	require.NoError(t, err)
	require.False(t, telemetry.Tracing(), "Prometheus alone exports no traces")
	counter, err := otel.Meter("test").Int64Counter("vwire_test_calls")
	require.NoError(t, err)
	counter.Add(context.Background(), 3)

	resp, err := http.Get("http://" + tel.PrometheusAddr().String() + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Contains(t, string(body), "vwire_test_calls_total{")
	require.Contains(t, string(body), "go_goroutines")

	addr := tel.PrometheusAddr().String()
	require.NoError(t, tel.Shutdown(context.Background()))
	_, err = net.Dial("tcp", addr)
	require.Error(t, err, "the endpoint is closed")
}

func TestSetupRefusesBadPrometheusConfig(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = taken.Close() })
	before := otel.GetMeterProvider()
	for _, tc := range []struct {
		c    telemetry.Config
		want string
	}{
		{telemetry.Config{Prometheus: true, PrometheusListenOn: taken.Addr().String()}, "NSM_PROMETHEUS_LISTEN_ON"},
		{telemetry.Config{Prometheus: true, PrometheusListenOn: "127.0.0.1:0", PrometheusCertFile: "/x.pem"}, "NSM_PROMETHEUS_CERT_FILE and NSM_PROMETHEUS_KEY_FILE go together"},
		{telemetry.Config{Prometheus: true, PrometheusListenOn: "127.0.0.1:0", PrometheusCAFile: "/ca.pem"}, "NSM_PROMETHEUS_CA_FILE needs TLS"},
		{telemetry.Config{Prometheus: true, PrometheusListenOn: "127.0.0.1:0", PrometheusCertFile: "/nonexistent/c.pem", PrometheusKeyFile: "/nonexistent/k.pem"}, "no such file"},
	} {
		_, err := telemetry.Setup(context.Background(), "cmd-test", tc.c)
		require.ErrorContains(t, err, tc.want)
		require.Equal(t, before, otel.GetMeterProvider(), "a failed Setup installs nothing")
		require.False(t, telemetry.Tracing())
	}
}

// config is how a command reads the variables.
type config struct{ envconfig.Common }

func TestVariables(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string // the collector, or the error
	}{
		{nil, ""},
		{[]string{"NSM_OPEN_TELEMETRY_ENDPOINT=jaeger:4317"}, "jaeger:4317"},
		{[]string{"NSM_OPEN_TELEMETRY_ENDPOINT=http://[::1]:4317/"}, "[::1]:4317"},
		{[]string{"TELEMETRY=true"}, telemetry.NSMCollector},
		{[]string{"TELEMETRY=false", "NSM_OPEN_TELEMETRY_ENDPOINT=jaeger:4317"}, ""},
		{[]string{"TELEMETRY=yes"}, `TELEMETRY: "yes": want true or false`},
		{[]string{"NSM_OPEN_TELEMETRY_ENDPOINT=jaeger"}, `NSM_OPEN_TELEMETRY_ENDPOINT: "jaeger": want host:port, as in otel-collector`},
		{[]string{"NSM_OPEN_TELEMETRY_ENDPOINT=unix:///run/otlp//grpc.sock"}, "unix:///run/otlp/grpc.sock"},
		{[]string{"NSM_OPEN_TELEMETRY_ENDPOINT=unix://otlp.sock"}, `NSM_OPEN_TELEMETRY_ENDPOINT: "unix://otlp.sock": a unix socket is unix:///absolute/path`},
		{[]string{"NSM_OPEN_TELEMETRY_ENDPOINT=https://jaeger:4317"}, `NSM_OPEN_TELEMETRY_ENDPOINT: "https://jaeger:4317": OTLP/gRPC without TLS is host:port, http://host:port or unix:///path`},
		{[]string{"NSM_OPEN_TELEMETRY_ENDPOINT=:4317"}, `NSM_OPEN_TELEMETRY_ENDPOINT: ":4317": no host`},
		{[]string{"NSM_OPEN_TELEMETRY_ENDPOINT=jaeger:0"}, `port "0" is not a number from 1 to 65535`},
		{[]string{"NSM_OPEN_TELEMETRY_ENDPOINT=jaeger:otlp"}, `port "otlp" is not a number`},
		{[]string{"NSM_METRICS_EXPORT_INTERVAL=0s"}, `NSM_METRICS_EXPORT_INTERVAL: "0s": must be positive`},
		{[]string{"PROMETHEUS=maybe"}, `PROMETHEUS: "maybe": want true or false`},
	} {
		for _, key := range []string{"NSM_OPEN_TELEMETRY_ENDPOINT", "TELEMETRY", "NSM_METRICS_EXPORT_INTERVAL", "PROMETHEUS"} {
			t.Setenv(key, "") // restored when the test ends
			require.NoError(t, os.Unsetenv(key))
		}
		for _, kv := range tc.env {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		var c config
		err := envconfig.Process(&c)
		var bad *envconfig.Error
		if errors.As(err, &bad) {
			require.Contains(t, err.Error(), tc.want, "%v", tc.env)
			continue
		}
		require.NoError(t, err, "%v", tc.env)
		require.Equal(t, tc.want, c.Collector(), "%v", tc.env)
	}
}

// FuzzEndpoint: whatever Decode accepts is a host:port that Go splits, with a port in range,
// and decoding it again gives it back.
func FuzzEndpoint(f *testing.F) {
	for _, s := range []string{"jaeger:4317", "http://127.0.0.1:4317", "[::1]:4317", ":4317", "a:b:c", "http://x:1/", "unix:///x", "unix://x", "unix:///a/../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var e telemetry.Endpoint
		if e.Decode(s) != nil {
			return
		}
		if s == "" || strings.TrimSpace(s) == "" {
			require.Empty(t, e)
			return
		}
		if !strings.HasPrefix(string(e), "unix:///") {
			host, _, err := net.SplitHostPort(string(e))
			require.NoError(t, err)
			require.NotEmpty(t, host)
		}
		var again telemetry.Endpoint
		require.NoError(t, again.Decode(string(e)))
		require.Equal(t, e, again)
	})
}

// TestExportErrorsLoggedOnce: what OpenTelemetry cannot export is a WARN line, not one per
// interval, also when two failures come in turn (a collector down: traces, then metrics).
func TestExportErrorsLoggedOnce(t *testing.T) {
	before := slog.Default()
	t.Cleanup(func() { slog.SetDefault(before) })
	var logs bytes.Buffer
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	tel, err := telemetry.Setup(context.Background(), "cmd-test", telemetry.Config{Prometheus: true, PrometheusListenOn: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	for _, msg := range []string{"traces: collector down", "traces: collector down", "metrics: collector down",
		"traces: collector down", "metrics: collector down", "no metrics service"} {
		otel.Handle(errors.New(msg))
	}
	require.Equal(t, 1, strings.Count(logs.String(), `level=WARN msg="telemetry: export failed; the same failure is not logged again for 10m0s" error="traces: collector down"`), logs.String())
	require.Equal(t, 1, strings.Count(logs.String(), `error="metrics: collector down"`), logs.String())
	require.Equal(t, 1, strings.Count(logs.String(), `error="no metrics service"`), logs.String())
	require.Equal(t, 3, strings.Count(logs.String(), "\n"), logs.String())
}
