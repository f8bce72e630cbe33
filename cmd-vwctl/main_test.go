package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/tools/sandbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var update = flag.Bool("update", false, "rewrite testdata/help.golden")

// vwctl runs the command with args and the variables env (nothing else of the process's).
func vwctl(env map[string]string, args ...string) (stdout, stderr string, code int) {
	var out, errs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code = run(ctx, args, func(k string) string { return env[k] }, &out, &errs)
	return out.String(), errs.String(), code
}

func TestHelp(t *testing.T) {
	out, _, code := vwctl(nil, "-h")
	require.Zero(t, code)
	path := filepath.Join("testdata", "help.golden")
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(out), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), out, "go test -update rewrites %s", path)
}

func TestBadUsage(t *testing.T) {
	insecure := map[string]string{"NSM_INSECURE": "true"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"status"}, `unknown command "status"`},
		{[]string{"path"}, "path takes one connection ID"},
		{[]string{"connections", "extra"}, "connections takes no argument"},
		{[]string{"-o", "yaml", "connections"}, "use -o table or -o json"},
		{[]string{"-nsmgr", "/var/lib/nsm.sock", "connections"}, `-nsmgr (VWCTL_NSMGR) "/var/lib/nsm.sock" is not a hop URL`},
		{[]string{"-registry", "registry:5002", "services"}, "-registry (VWCTL_REGISTRY)"},
	} {
		_, errs, code := vwctl(insecure, tc.args...)
		require.Equal(t, 2, code, "%v", tc.args)
		require.Contains(t, errs, tc.want, "%v", tc.args)
	}
}

func TestBadLogLevel(t *testing.T) {
	_, errs, code := vwctl(map[string]string{"NSM_INSECURE": "true", "NSM_LOG_LEVEL": "LOUD"}, "connections")
	require.Equal(t, 2, code)
	require.Contains(t, errs, "NSM_LOG_LEVEL=LOUD")
}

func TestErrorsSayWhatToSet(t *testing.T) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })

	// No identity: the variables, and the local mesh's default.
	_, errs, code := vwctl(map[string]string{"VWIRE_DEMO_DIR": dir}, "connections")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "NSM_IDENTITY_DIR")
	require.Contains(t, errs, filepath.Join(dir, "id", "vwctl"))

	// No nsmgr where the local mesh's would be: its URL, and the flag and variable to set.
	_, errs, code = vwctl(map[string]string{"VWIRE_DEMO_DIR": dir, "NSM_INSECURE": "true"}, "connections")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "nsmgr at unix://"+filepath.Join(dir, "run", "nsmgr1.sock"))
	require.Contains(t, errs, "set -nsmgr or VWCTL_NSMGR")

	_, errs, code = vwctl(map[string]string{"NSM_INSECURE": "true", "VWCTL_REGISTRY": "unix://" + dir + "/none.sock"}, "services")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "set -registry or VWCTL_REGISTRY")
}

// TestConnectionsOfASandbox runs the whole command against a real nsmgr (the sdk's sandbox,
// without identities) holding one connection.
func TestConnectionsOfASandbox(t *testing.T) {
	mesh := sandbox.New(t, 1, sandbox.Insecure())
	mesh.RegisterService(&registry.NetworkService{Name: "svc"})
	mesh.Nodes[0].NewEndpoint(&registry.NetworkServiceEndpoint{Name: "nse", NetworkServiceNames: []string{"svc"}},
		point2pointipam.NewServer(netip.MustParsePrefix("172.16.0.0/16")))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := mesh.Nodes[0].NewClient("nsc").Request(ctx, &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{Id: "c-1", NetworkService: "svc"},
	})
	require.NoError(t, err)

	env := map[string]string{"NSM_INSECURE": "true", "VWCTL_NSMGR": mesh.Nodes[0].NSMgr.URL.String()}
	out, errs, code := vwctl(env, "connections", "-o", "json") // flags after the command too
	require.Zero(t, code, errs)
	var conns []struct{ Client, Service, Endpoint, State string }
	require.NoError(t, json.Unmarshal([]byte(out), &conns))
	require.Equal(t, []struct{ Client, Service, Endpoint, State string }{{"nsc", "svc", "nse", "UP"}}, conns)

	out, _, code = vwctl(env, "-o", "json", "connections")
	require.Zero(t, code)
	var ids []struct{ ID string }
	require.NoError(t, json.Unmarshal([]byte(out), &ids))
	out, errs, code = vwctl(env, "path", ids[0].ID, "-o", "json") // a flag after the argument
	require.Zero(t, code, errs)
	require.True(t, json.Valid([]byte(out)), out)

	out, _, code = vwctl(env, "services")
	require.Zero(t, code)
	require.True(t, strings.HasPrefix(out, "NAME"))
	require.Contains(t, out, "svc")
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"unix:///var/lib/networkservicemesh/nsm.io.sock", "tcp://[::1]:5001", "registry:5002", "", "unix://%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parseURL(s, "-nsmgr", "VWCTL_NSMGR")
		if err != nil {
			require.Contains(t, err.Error(), "VWCTL_NSMGR")
			return
		}
		require.Contains(t, []string{"unix", "tcp"}, u.Scheme)
	})
}
