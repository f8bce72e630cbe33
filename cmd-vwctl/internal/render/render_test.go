package render_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"vwire.dev/cmd-vwctl/internal/check"
	"vwire.dev/cmd-vwctl/internal/inspect"
	"vwire.dev/cmd-vwctl/internal/render"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var update = flag.Bool("update", false, "rewrite testdata/*.golden from what the tests get")

// now is when the inputs of testdata were captured on the local mesh (`vwctl -o json ...`):
// times are shown relative to it.
var now = time.Date(2026, 12, 7, 22, 11, 27, 0, time.UTC)

// golden compares got with testdata/name.golden, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got), "%s differs (go test -update rewrites it)", path)
}

// input reads testdata/name.json, captured from the local mesh, into v.
func input(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, v))
}

// records reads testdata/name.json, a JSON list of registry records, with protojson.
func records[M proto.Message](t *testing.T, name string, newRecord func() M) []M {
	t.Helper()
	var raw []json.RawMessage
	input(t, name, &raw)
	out := []M{}
	for _, r := range raw {
		m := newRecord()
		require.NoError(t, protojson.Unmarshal(r, m))
		out = append(out, m)
	}
	return out
}

// both renders with each format and compares each with its golden file.
func both(t *testing.T, name string, write func(w *bytes.Buffer, f render.Format) error) {
	t.Helper()
	for _, f := range []render.Format{render.Table, render.JSON} {
		var b bytes.Buffer
		require.NoError(t, write(&b, f))
		golden(t, name+"."+string(f), b.Bytes())
	}
}

func TestConnections(t *testing.T) {
	var conns []inspect.Connection
	input(t, "connections", &conns)
	both(t, "connections", func(w *bytes.Buffer, f render.Format) error { return render.Connections(w, f, conns, now) })
	both(t, "connections-none", func(w *bytes.Buffer, f render.Format) error { return render.Connections(w, f, nil, now) })
}

func TestPath(t *testing.T) {
	for _, name := range []string{"path-up", "path-broken", "path-k8s"} {
		var p inspect.Path
		input(t, name, &p)
		both(t, name, func(w *bytes.Buffer, f render.Format) error { return render.Path(w, f, &p) })
	}
}

func TestRegistry(t *testing.T) {
	nss := records(t, "services", func() *registry.NetworkService { return &registry.NetworkService{} })
	both(t, "services", func(w *bytes.Buffer, f render.Format) error { return render.Services(w, f, nss) })
	nses := records(t, "endpoints", func() *registry.NetworkServiceEndpoint { return &registry.NetworkServiceEndpoint{} })
	both(t, "endpoints", func(w *bytes.Buffer, f render.Format) error { return render.Endpoints(w, f, nses, now) })
}

func TestChecks(t *testing.T) {
	var results []check.Result
	input(t, "check", &results)
	both(t, "check", func(w *bytes.Buffer, f render.Format) error { return render.Checks(w, f, results) })
}

func TestParseFormat(t *testing.T) {
	f, err := render.ParseFormat("json")
	require.NoError(t, err)
	require.Equal(t, render.JSON, f)
	_, err = render.ParseFormat("yaml")
	require.ErrorContains(t, err, "use -o table or -o json")
}
