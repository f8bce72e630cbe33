package integrationtests

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"vwire.dev/sdk/pkg/networkservice/core/trace"
	"vwire.dev/sdk/pkg/tools/telemetry/otlptest"
)

// remotePath is the processes of the k2wg2k client's Request, the mesh's remote path over
// WireGuard, by the names mesh.sh gives them, from the client to the endpoint, and the registry,
// which nsmgr-1 asks for the service's endpoints.
var remotePath = []string{"nsc-k2wg2k", "nsmgr1", "forwarder1", "nsmgr2", "forwarder2", "nse-k2wg2k", "registry"}

// elementsOf are the spans each kind of process must show in a Request's trace: the gRPC call
// that reached it (otelgrpc's span) and every element of its chains that the Request goes
// through, as seen on the local mesh (the metrics elements left out: they come and go with
// what is measured).
var elementsOf = map[string][]string{
	"nsc": {"requesting", "retry.Request", "refresh.Request", "heal.Request", "sendfd.Request", "dial.Request",
		"monitor.Request", "connect.Request", "networkservice.NetworkService/Request"},
	"nsmgr": {"networkservice.NetworkService/Request", "updatepath.Request", "validate.Request", "begin.Request",
		"updatetoken.Request", "authorize.Request", "metadata.Request", "timeout.Request", "monitor.Request", "orphan.Request",
		"recvfd.Request", "clientinfo.Request", "discover.Request", "discoverforwarder.Request", "roundrobin.Request",
		"heal.Request", "refresh.Request", "sendfd.Request", "dial.Request", "connect.Request",
		"querycache.Find", "localbypass.Find", "registry.NetworkServiceEndpointRegistry/Find"},
	"forwarder": {"networkservice.NetworkService/Request", "updatepath.Request", "validate.Request", "begin.Request",
		"updatetoken.Request", "authorize.Request", "metadata.Request", "timeout.Request", "monitor.Request", "recvfd.Request",
		"mechanisms.Request", "mechanismtranslation.Request", "xconnect.Request", "kernel.Request", "wireguard.Request",
		"vxlan.Request", "discover.Request", "roundrobin.Request", "heal.Request", "refresh.Request", "sendfd.Request",
		"dial.Request", "connect.Request"},
	"nse": {"networkservice.NetworkService/Request", "updatepath.Request", "validate.Request", "begin.Request",
		"updatetoken.Request", "authorize.Request", "metadata.Request", "timeout.Request", "monitor.Request", "onidle.Request",
		"mechanisms.Request", "dnscontext.Request", "point2pointipam.Request", "sendfd.Request"},
	"registry": {"registry.NetworkServiceEndpointRegistry/Find", "validate.Find", "authorize.Find", "updatepath.Find", "memory.Find"},
}

// TestTracing: with NSM_OPEN_TELEMETRY_ENDPOINT set on every process of the local mesh (an
// OTLP receiver of the test's own, on a unix socket that every namespace reaches), a client's
// Request across nodes is one trace: one root, the client's, every span under it, and the spans
// of every hop (client, nsmgr and forwarder of each node, endpoint, and the registry nsmgr-1
// asks) and of every element of each that the Request goes through.
// A Request that fails marks the element where its error began, and every span above it says
// it passed the error on.
func TestTracing(t *testing.T) {
	collector := otlptest.StartUnix(t, filepath.Join(tempDir(t), "otlp.sock"))
	dir := upTracedMesh(t, collector.Endpoint())
	hops := pids(t, dir, remotePath)

	id := tracesOf(t, filepath.Join(dir, "run", "nsc-k2wg2k.log"))[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spans, err := collector.Await(ctx, func(all []otlptest.Span) bool { return missing(inTrace(all, id), hops) == "" })
	require.NoError(t, err, "the trace %s: %s\n%s", id, missing(inTrace(spans, id), hops), tree(inTrace(spans, id), hops))
	spans = inTrace(spans, id)
	t.Logf("the trace of the k2wg2k client's Request, %d spans:\n%s", len(spans), tree(spans, hops))
	roots := slices.DeleteFunc(slices.Clone(spans), func(s otlptest.Span) bool { return s.ParentID != "" })
	require.Len(t, roots, 1, "one root")
	require.Equal(t, "requesting", roots[0].Name)
	require.Equal(t, hops[roots[0].PID], "nsc-k2wg2k", "the client's")

	// A service that no endpoint offers: the client's Request fails at its nsmgr.
	out, err := runClient(t, dir, collector.Endpoint(), "icmp-none")
	require.Error(t, err, "the Request fails:\n%s", out)
	ids := tracesOf(t, out)
	failing := map[string]string{hopPID(t, dir, "nsmgr1"): "nsmgr1"}
	for _, id := range ids {
		spans, err := collector.Await(ctx, func(all []otlptest.Span) bool { return origins(inTrace(all, id)) != nil })
		require.NoError(t, err, "the failed Request's trace %s marks where its error began:\n%s", id, tree(inTrace(spans, id), failing))
		spans = inTrace(spans, id)
		t.Logf("the trace of a Request for a service without endpoints, %d spans:\n%s", len(spans), tree(spans, failing))
		for _, s := range origins(spans) {
			require.Equal(t, "nsmgr1", failing[s.PID], "the error began in the nsmgr: %s", s.Name)
			require.Equal(t, "discover.Request", s.Name, "in its discover element, which found no endpoint")
			require.Contains(t, s.Status, "icmp-none")
		}
		passed := 0
		for _, s := range spans {
			if s.Failed && s.Attrs[string(trace.OriginKey)] == "false" {
				require.True(t, strings.HasPrefix(s.Status, "passed on: "), s.Status)
				passed++
			}
		}
		require.Greater(t, passed, 10, "the elements of the client and of the nsmgr above discover passed the error on")
	}
}

// TestTracingInJaeger: the same mesh exporting to a real Jaeger v2 (make jaeger-bin); the trace
// ID the client logs finds the Request's trace through Jaeger's query API, with the spans of
// every hop and element.
func TestTracingInJaeger(t *testing.T) {
	sock := filepath.Join(tempDir(t), "otlp.sock")
	query := startJaeger(t, sock)
	dir := upTracedMesh(t, "unix://"+sock)
	hops := pids(t, dir, remotePath)
	id := tracesOf(t, filepath.Join(dir, "run", "nsc-k2wg2k.log"))[0]

	var got jaegerTrace
	require.Eventually(t, func() bool {
		got = jaegerGet(t, query, id)
		var spans []otlptest.Span
		for _, s := range got.Spans {
			spans = append(spans, otlptest.Span{Name: s.OperationName, SpanID: s.SpanID, ParentID: s.parent(), PID: got.Processes[s.ProcessID].pid()})
		}
		return missing(spans, hops) == ""
	}, 30*time.Second, 200*time.Millisecond, "Jaeger has every hop of the trace %s", id)
	services := map[string]bool{}
	for _, p := range got.Processes {
		services[p.ServiceName] = true
	}
	// The registry is in it too: nsmgr-1 asked it for the service's endpoints.
	require.Equal(t, map[string]bool{"cmd-nsc": true, "cmd-nsmgr": true, "cmd-forwarder-kernel": true, "cmd-nse-icmp-responder": true,
		"cmd-registry-memory": true}, services)
	t.Logf("Jaeger has the trace %s at http://%s/api/traces/%s: %d spans of %d processes", id, query, id, len(got.Spans), len(got.Processes))
}

// tempDir is a folder of the test's own, short enough for a unix socket's path.
func tempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// upTracedMesh starts the local mesh with every process exporting to collector, its spans sent
// every 100 ms instead of every 5 s.
func upTracedMesh(t *testing.T, collector string) string {
	t.Setenv("MESH_OPEN_TELEMETRY_ENDPOINT", collector)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	return upMesh(t)
}

// hopPID is the process ID of the mesh's process name.
func hopPID(t *testing.T, dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, "run", name+".pid"))
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// pids maps the process IDs of names to the names.
func pids(t *testing.T, dir string, names []string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		out[hopPID(t, dir, n)] = n
	}
	return out
}

var traceIDLine = regexp.MustCompile(`msg=requesting .*trace_id=([0-9a-f]{32})`)

// tracesOf returns the trace IDs a client logged, in order, from its log file or its output.
func tracesOf(t *testing.T, logOrOutput string) []string {
	text := logOrOutput
	if b, err := os.ReadFile(logOrOutput); err == nil {
		text = string(b)
	}
	var ids []string
	for _, m := range traceIDLine.FindAllStringSubmatch(text, -1) {
		ids = append(ids, m[1])
	}
	require.NotEmpty(t, ids, "the client logs the trace ID of its Request:\n%s", text)
	return ids
}

func inTrace(all []otlptest.Span, id string) []otlptest.Span {
	return slices.DeleteFunc(slices.Clone(all), func(s otlptest.Span) bool { return s.TraceID != id })
}

// missing says what spans lacks to be a whole trace of the hops (process ID -> name): a hop, an
// element of one, or the parent of a span; "" when nothing.
func missing(spans []otlptest.Span, hops map[string]string) string {
	ids := map[string]bool{}
	names := map[string]map[string]bool{}
	for _, s := range spans {
		ids[s.SpanID] = true
		if names[s.PID] == nil {
			names[s.PID] = map[string]bool{}
		}
		names[s.PID][s.Name] = true
	}
	var lack []string
	for pid, hop := range hops {
		for _, e := range elementsOf[strings.TrimRight(strings.Split(hop, "-")[0], "0123456789")] {
			if !names[pid][e] {
				lack = append(lack, hop+": "+e)
			}
		}
	}
	for _, s := range spans {
		if s.ParentID != "" && !ids[s.ParentID] {
			lack = append(lack, "the parent of "+s.Name)
		}
	}
	sort.Strings(lack)
	return strings.Join(lack, ", ")
}

// origins are the spans marked as where an error began; nil when none is.
func origins(spans []otlptest.Span) []otlptest.Span {
	var out []otlptest.Span
	for _, s := range spans {
		if s.Attrs[string(trace.OriginKey)] == "true" {
			out = append(out, s)
		}
	}
	return out
}

// tree draws spans as a tree for the test's log: each under its parent, named with its hop.
func tree(spans []otlptest.Span, hops map[string]string) string {
	children := map[string][]otlptest.Span{}
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanID] = true
	}
	for _, s := range spans {
		parent := s.ParentID
		if !ids[parent] {
			parent = ""
		}
		children[parent] = append(children[parent], s)
	}
	var b strings.Builder
	var draw func(parent string, depth int)
	draw = func(parent string, depth int) {
		for _, s := range children[parent] {
			mark := ""
			if s.Failed {
				mark = fmt.Sprintf("  [error, origin=%s: %s]", s.Attrs[string(trace.OriginKey)], s.Status)
			}
			fmt.Fprintf(&b, "%s%s %s%s\n", strings.Repeat("  ", depth), cmp.Or(hops[s.PID], s.Service), s.Name, mark)
			draw(s.SpanID, depth+1)
		}
	}
	draw("", 0)
	return b.String()
}

// runClient runs one more client in the k2k client's namespace, with its identity, asking for
// service; it gives up after 2 s. It returns the client's output.
func runClient(t *testing.T, dir, collector, service string) (string, error) {
	cmd := exec.Command("ip", "netns", "exec", "vw-nsc-k2k", filepath.Join(dir, "bin", "cmd-nsc"))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"NSM_IDENTITY_DIR=" + filepath.Join(dir, "id", "nsc-k2k"),
		"NSM_NAME=nsc-traced",
		"NSM_CONNECT_TO=unix://" + filepath.Join(dir, "run", "nsmgr1.sock"),
		"NSM_NETWORK_SERVICES=kernel://" + service + "/nsm-9",
		"NSM_REQUEST_TIMEOUT=2s",
		"NSM_OPEN_TELEMETRY_ENDPOINT=" + collector,
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startJaeger runs Jaeger v2 with its OTLP/gRPC receiver on the unix socket sock and its memory
// store, until the test ends, and returns the host:port of its query service.
func startJaeger(t *testing.T, sock string) string {
	bin := filepath.Join(binDir(), "jaeger")
	_, err := os.Stat(bin)
	require.NoError(t, err, "run `make jaeger-bin` (it builds Jaeger v2 from the Go module proxy into .build/bin)")
	query := freeAddr(t)
	config := filepath.Join(filepath.Dir(sock), "jaeger.yaml")
	require.NoError(t, os.WriteFile(config, []byte(fmt.Sprintf(jaegerConfig, query, freeAddr(t), sock)), 0o600))
	log, err := os.Create(filepath.Join(filepath.Dir(sock), "jaeger.log"))
	require.NoError(t, err)
	cmd := exec.Command(bin, "--config", config)
	cmd.Env = append(os.Environ(), "OTEL_SDK_DISABLED=true", "OTEL_TRACES_EXPORTER=none") // no traces of Jaeger's own
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("jaeger's log:\n%s", b)
		}
	})
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + query + "/api/services")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		_, err = os.Stat(sock)
		return resp.StatusCode == http.StatusOK && err == nil
	}, 30*time.Second, 100*time.Millisecond, "Jaeger answers on %s and receives on %s", query, sock)
	return query
}

// jaegerConfig: OTLP/gRPC in on a unix socket (%[3]s), a memory store, the query service on
// loopback (%[1]s, its gRPC API on %[2]s), and no metrics of Jaeger's own.
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: %[1]s
    grpc:
      endpoint: %[2]s
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %[3]s
        transport: unix
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// binDir is where make's tool binaries are: $VWIRE_KUBE_BIN, else .build/bin of the workspace.
func binDir() string {
	if dir := os.Getenv("VWIRE_KUBE_BIN"); dir != "" {
		return dir
	}
	return filepath.Join("..", ".build", "bin")
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// jaegerTrace is a trace as Jaeger's query API (/api/traces/ID) gives it.
type jaegerTrace struct {
	Spans     []jaegerSpan             `json:"spans"`
	Processes map[string]jaegerProcess `json:"processes"`
}

type jaegerSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	ProcessID     string `json:"processID"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
}

func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

type jaegerProcess struct {
	ServiceName string `json:"serviceName"`
	Tags        []struct {
		Key   string          `json:"key"`
		Value json.RawMessage `json:"value"`
	} `json:"tags"`
}

func (p jaegerProcess) pid() string {
	for _, tag := range p.Tags {
		if tag.Key == "process.pid" {
			return strings.Trim(string(tag.Value), `"`)
		}
	}
	return ""
}

// jaegerGet asks Jaeger's query API for the trace id; an empty trace while it has none.
func jaegerGet(t *testing.T, query, id string) jaegerTrace {
	resp, err := http.Get("http://" + query + "/api/traces/" + id)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Data []jaegerTrace `json:"data"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&body) != nil || len(body.Data) == 0 {
		return jaegerTrace{}
	}
	return body.Data[0]
}
