package cmdtest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

var child string

func TestMain(m *testing.M) {
	bin, remove, err := cmdtest.Build("./testdata/child")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	child = bin
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		remove()
		os.Exit(code)
	}))
}

func TestRunSeesOnlyTheGivenEnvironment(t *testing.T) {
	t.Setenv("NSM_NAME", "from-the-shell")
	for _, tc := range []struct {
		name string
		env  []string
		code int
	}{
		{"nothing", nil, 0},
		{"one variable", []string{"NSM_NAME=nse-1"}, 0},
		{"exit code", []string{"A=b", "C=d"}, 3},
		{"an identity of its own", []string{"NSM_INSECURE=true"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cmdtest.Run(t, child, tc.env, fmt.Sprint(tc.code), "env")
			require.Equal(t, tc.code, code)
			require.Equal(t, "started\n", stderr)
			var lines []string
			if stdout != "" {
				lines = strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			}
			if tc.name != "an identity of its own" {
				// Start gives the process an identity: SVID files of the test's trust domain.
				require.NotEmpty(t, lines)
				dir, ok := strings.CutPrefix(lines[len(lines)-1], "NSM_IDENTITY_DIR=")
				require.True(t, ok, "the last variable is the identity, got %q", lines)
				src, err := spiffe.Files(dir)
				require.NoError(t, err)
				svid, err := src.GetX509SVID()
				require.NoError(t, err)
				require.True(t, svid.ID.MemberOf(cmdtest.TrustDomain))
				lines = lines[:len(lines)-1]
			}
			require.ElementsMatch(t, tc.env, lines)
		})
	}
}

func TestStopAndWaitStderr(t *testing.T) {
	p := cmdtest.Start(t, child, nil, "wait")
	p.WaitStderr("started") // the child handles SIGTERM from now on
	require.False(t, p.Exited())
	require.Zero(t, p.Stop())
	require.Equal(t, "started\nstopping\n", p.Stderr())
}

func TestCleanupKillsWhatIsLeft(t *testing.T) {
	var p *cmdtest.Process
	t.Run("leaves a process running", func(t *testing.T) {
		p = cmdtest.Start(t, child, nil, "stubborn")
		p.WaitStderr("started")
	})
	require.True(t, p.Exited())
}

func TestGoldenAndSection(t *testing.T) {
	dir := cmdtest.TempDir(t)
	golden := filepath.Join(dir, "help.golden")
	require.NoError(t, os.WriteFile(golden, []byte("same\n"), 0o644))
	cmdtest.Golden(t, golden, "same\n")

	readme := filepath.Join(dir, "README.md")
	require.NoError(t, os.WriteFile(readme, []byte("# x\n<!-- begin vars -->\n| a |\n<!-- end vars -->\nmore\n"), 0o644))
	cmdtest.Section(t, readme, "vars", "| a |\n")
}

func TestSectionMismatchFails(t *testing.T) {
	dir := cmdtest.TempDir(t)
	readme := filepath.Join(dir, "README.md")
	require.NoError(t, os.WriteFile(readme, []byte("<!-- begin vars -->\nold\n<!-- end vars -->\n"), 0o644))
	rec := &recorder{TB: t}
	cmdtest.Section(rec, readme, "vars", "new\n")
	require.True(t, rec.failed)
	cmdtest.Golden(rec, filepath.Join(dir, "missing.golden"), "x")
	require.True(t, rec.fatal)
}

// recorder notes failures instead of failing the test.
type recorder struct {
	testing.TB
	failed, fatal bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) Fatalf(string, ...any) { r.fatal = true }

func TestFails(t *testing.T) {
	line, took := cmdtest.Fails(t, child, nil, "1")
	require.Equal(t, "started", line)
	require.Less(t, took, cmdtest.WaitLimit)

	rec := &recorder{TB: t}
	cmdtest.Fails(rec, child, nil, "0") // exit 0 is no failure
	require.True(t, rec.fatal)
}
