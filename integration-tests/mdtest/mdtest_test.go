package mdtest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// load parses a testdata example as suitegen does.
func load(t *testing.T, name string) Example {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "examples", name, "README.md"))
	require.NoError(t, err)
	p, err := Parse(name, src)
	require.NoError(t, err)
	return Example{Name: name, Run: p.Run, Cleanup: p.Cleanup}
}

func TestParse(t *testing.T) {
	src, err := os.ReadFile("testdata/examples/broken/README.md")
	require.NoError(t, err)
	p, err := Parse("broken", src)
	require.NoError(t, err)
	require.True(t, p.HasRun)
	require.Equal(t, []string{"../shell"}, p.Requires)
	require.Equal(t, []Step{
		{Line: 13, Script: "GREETING=hello"},
		{Line: 18, Script: "echo \"$GREETING from step 2\"\nfalse\necho \"not reached\""},
		{Line: 25, Script: "echo ran >\"$VWIRE_TEST_MARKER.step3\""},
	}, p.Run)
	require.Equal(t, []Step{{Line: 31, Script: "echo \"$GREETING\" >>\"$VWIRE_TEST_MARKER\""}}, p.Cleanup)

	// NSM's shapes: a level-3 Requires with a sentence of links, a link with a title, an
	// external link (no example), a fence of four backticks holding three, CRLF line ends.
	p, err = Parse("nsm", []byte("# X\n### Requires\nDo [basic](../../basic/) or [m](../m \"t\"), see [k](https://k8s.io).\n"+
		"## Run\r\n````bash\r\necho '```'\r\n````\r\n# Cleanup\n~~~ bash\nkubectl delete ns x\n~~~\n"))
	require.NoError(t, err)
	require.Equal(t, []string{"../../basic/", "../m"}, p.Requires)
	require.Equal(t, []Step{{Line: 5, Script: "echo '```'"}}, p.Run)
	require.Equal(t, []Step{{Line: 9, Script: "kubectl delete ns x"}}, p.Cleanup)

	p, err = Parse("index", []byte("# Examples\n- [basic](basic)\n```bash\nls\n```\n"))
	require.NoError(t, err)
	require.False(t, p.HasRun, "a README without Run is no example")
	require.Empty(t, p.Run)

	for name, bad := range map[string]string{
		"never closed": "## Run\n```bash\necho\n",
		"a second":     "## Run\n```bash\necho\n```\n## Run\n",
		"Includes":     "## Includes\n- [a](../a)\n",
		"is empty":     "## Cleanup\n```bash\n\n```\n",
	} {
		_, err := Parse("bad", []byte(bad))
		require.ErrorContains(t, err, name)
		require.ErrorContains(t, err, "bad line ")
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"broken", "shell"} {
		src, err := os.ReadFile(filepath.Join("testdata", "examples", name, "README.md"))
		require.NoError(f, err)
		f.Add(src)
	}
	f.Add([]byte("## Run\n````bash\n```\n````\n# Requires\n[a](b)\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Parse("fuzz", src)
		if err != nil {
			return
		}
		for _, st := range append(p.Run, p.Cleanup...) {
			if st.Line < 1 || strings.TrimSpace(st.Script) == "" {
				t.Fatalf("step %+v: no line or an empty script", st)
			}
		}
	})
}

// TestBrokenExample is a README whose second step fails: the run stops there, says which step
// failed and what it printed, and the cleanup still runs with the state the first step left.
func TestBrokenExample(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "cleaned")
	t.Setenv("VWIRE_TEST_MARKER", marker)
	t.Setenv("VWIRE_STEP_RETRY", "0")
	var out bytes.Buffer
	r := &logReporter{out: &out}
	s := &Suite{Workspace: "."}

	require.False(t, s.Run(r, load(t, "broken")))
	require.True(t, r.failed)
	log := out.String()
	require.Contains(t, log, "example broken: step 2 of 3 (README.md line 18) failed: exit status 1")
	require.Contains(t, log, "    echo \"$GREETING from step 2\"\n    false\n")
	require.True(t, strings.HasSuffix(log, "output:\nhello from step 2\n\n"), "the output of step 2 is what it printed before false: %s", log)
	require.NoFileExists(t, marker+".step3")
	require.NoFileExists(t, marker, "the cleanup runs when the test ends, not before")

	require.False(t, r.runCleanups())
	got, err := os.ReadFile(marker)
	require.NoError(t, err)
	require.Equal(t, "hello\n", string(got))
}

// TestShellState runs an example whose steps pass: each sees what the one before left, the
// cleanup too, and the process a step left in the background is gone after the cleanup.
func TestShellState(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("VWIRE_TEST_DIR", dir)
	t.Setenv("VWIRE_TEST_MARKER", filepath.Join(dir, "cleaned"))
	var out bytes.Buffer
	r := &logReporter{out: &out}
	s := &Suite{Workspace: "."}

	require.True(t, s.Run(r, load(t, "shell")), out.String())
	require.Contains(t, out.String(), "the workspace's root is the working folder")
	require.True(t, r.runCleanups(), out.String())
	got, err := os.ReadFile(filepath.Join(dir, "cleaned"))
	require.NoError(t, err)
	require.Equal(t, "alpha 42\n", string(got))

	text, err := os.ReadFile(filepath.Join(dir, "background.pid"))
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(text)))
	require.NoError(t, err)
	// Killed, it is reaped by init soon after; signal 0 says whether it still exists.
	require.Eventually(t, func() bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) },
		10*time.Second, 10*time.Millisecond, "the background sleep %d is still there", pid)
}

func TestStepTimeout(t *testing.T) {
	t.Setenv("VWIRE_STEP_TIMEOUT", "100ms")
	t.Setenv("VWIRE_STEP_RETRY", "0")
	var out bytes.Buffer
	r := &logReporter{out: &out}
	s := &Suite{Workspace: "."}
	ex := Example{Name: "shell", Run: []Step{{Line: 1, Script: "echo started\nsleep 1000"}}}
	require.False(t, s.Run(r, ex))
	require.Contains(t, out.String(), "step 1 of 1 (README.md line 1) failed: no end after 100ms (VWIRE_STEP_TIMEOUT)")
	require.Contains(t, out.String(), "output:\nstarted\n")
	require.False(t, r.runCleanups(), "the run failed")

	t.Setenv("VWIRE_STEP_TIMEOUT", "soon")
	r = &logReporter{out: &out}
	require.False(t, s.Run(r, ex))
	require.Contains(t, out.String(), `VWIRE_STEP_TIMEOUT is "soon"`)
	r.runCleanups()
}

// TestRetry: a failing step runs again, from the state the step before left, until it passes;
// one that keeps failing is reported with its attempts.
func TestRetry(t *testing.T) {
	count := filepath.Join(t.TempDir(), "count")
	t.Setenv("VWIRE_STEP_RETRY", "1m")
	var out bytes.Buffer
	r := &logReporter{out: &out}
	s := &Suite{Workspace: "."}
	ex := Example{Name: "shell", Run: []Step{
		{Line: 1, Script: "X=1"},
		{Line: 2, Script: "X=$((X + 1))\necho attempt >>" + count + "\n[ $(wc -l <" + count + ") -ge 3 ]"},
		{Line: 3, Script: `[ "$X" = 2 ]`},
	}}
	require.True(t, s.Run(r, ex), out.String())
	text, err := os.ReadFile(count)
	require.NoError(t, err)
	require.Equal(t, "attempt\nattempt\nattempt\n", string(text))
	require.True(t, r.runCleanups())

	t.Setenv("VWIRE_STEP_RETRY", "1500ms")
	r = &logReporter{out: &out}
	require.False(t, s.Run(r, Example{Name: "shell", Run: []Step{{Line: 1, Script: "false"}}}))
	require.Contains(t, out.String(), "failed: exit status 1 (attempt 2, tried for 1.5s: VWIRE_STEP_RETRY)")
	r.runCleanups()
}
