package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The paths of `go generate` in integration-tests, from this package's folder.
const (
	examplesDir = "../../../deployments-k8s/examples"
	suitesDir   = "../../k8s"
)

// TestUpToDate fails when the checked-in suites are not what suitegen makes from the READMEs
// now, and when they do not compile.
func TestUpToDate(t *testing.T) {
	want, err := generate(examplesDir, suitesDir)
	require.NoError(t, err)
	got := map[string][]byte{}
	err = filepath.WalkDir(suitesDir, func(p string, d os.DirEntry, err error) error {
		if os.IsNotExist(err) && p == suitesDir {
			return filepath.SkipAll
		}
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(suitesDir, p)
		if err != nil {
			return err
		}
		got[filepath.ToSlash(rel)], err = os.ReadFile(p)
		return err
	})
	require.NoError(t, err)
	for name := range want {
		require.Contains(t, got, name, "integration-tests/k8s/%s is missing: run `go generate` in integration-tests", name)
		if line, w, g := firstDifference(string(want[name]), string(got[name])); line > 0 {
			t.Fatalf("integration-tests/k8s/%s is stale: run `go generate` in integration-tests\nline %d is\n\t%q\nand would be\n\t%q", name, line, g, w)
		}
	}
	for name := range got {
		require.Contains(t, want, name, "integration-tests/k8s/%s is no longer made from any README: run `go generate` in integration-tests", name)
	}
	if len(want) > 0 {
		out, err := goCommand(t, "vet", "-tags", buildTag, "vwire.dev/integration-tests/k8s/...").CombinedOutput()
		require.NoError(t, err, "the suites do not compile:\n%s", out)
	}
}

// TestBrokenSuite compiles the testdata examples of mdtest and runs the suites with go test: in
// the suite of the examples requiring shell, the example broken fails at its second step; the
// failure names it and shows its output, and both the example's cleanup and then the setup's
// run. The examples are plain shell: the cluster is never used, only named.
func TestBrokenSuite(t *testing.T) {
	gen, err := os.MkdirTemp(".", "_gen-") // inside the module, as the suites import mdtest; "_": no ./... sees it
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(gen) })
	files, err := generate("../testdata/examples", gen)
	require.NoError(t, err)
	require.NoError(t, write(gen, files))

	dir := t.TempDir()
	marker := filepath.Join(dir, "cleaned")
	env := []string{"VWIRE_STEP_RETRY=0", "VWIRE_KUBECONFIG=" + filepath.Join(dir, "no-cluster"), "VWIRE_TEST_DIR=" + dir, "VWIRE_TEST_MARKER=" + marker}

	cmd := goCommand(t, "test", "-tags", buildTag, "-count=1", "./"+filepath.ToSlash(filepath.Join(gen, "shell")))
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "%s", out)
	require.Contains(t, string(out), "--- FAIL: TestBroken")
	require.Contains(t, string(out), "example broken: step 2 of 3 (README.md line 18) failed: exit status 1")
	require.Contains(t, string(out), "output:\n        hello from step 2\n", "the step's output, indented by go test")
	require.NoFileExists(t, marker+".step3")
	got, err := os.ReadFile(marker)
	require.NoError(t, err)
	require.Equal(t, "hello\nalpha 42\n", string(got), "the example's cleanup, then the setup's")

	require.NoError(t, os.Remove(marker))
	cmd = goCommand(t, "test", "-tags", buildTag, "-count=1", "./"+filepath.ToSlash(filepath.Join(gen, "standalone")))
	cmd.Env = append(cmd.Env, env...)
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	got, err = os.ReadFile(marker)
	require.NoError(t, err)
	require.Equal(t, "alpha 42\n", string(got))
}

func TestBadExamples(t *testing.T) {
	for name, c := range map[string]struct {
		readmes map[string]string
		err     string
	}{
		"no such example": {map[string]string{"a": "## Requires\n[b](../b)\n## Run\n```bash\ntrue\n```\n"}, `requires "b", which is no folder`},
		"circle": {map[string]string{
			"a": "## Requires\n[b](../b/README.md)\n## Run\n```bash\ntrue\n```\n",
			"b": "## Requires\n[a](../a#run)\n## Run\n```bash\ntrue\n```\n",
		}, "in a circle: b -> a -> b"},
		"bad README": {map[string]string{"a": "## Run\n```bash\ntrue\n"}, "a/README.md line 2: the code block is never closed"},
		"two tests":  {map[string]string{"a-b": "## Run\n```bash\ntrue\n```\n", "a_b": "## Run\n```bash\ntrue\n```\n"}, "would both be test TestAB"},
	} {
		t.Run(name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "examples")
			for dir, readme := range c.readmes {
				require.NoError(t, os.MkdirAll(filepath.Join(root, dir), 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(root, dir, "README.md"), []byte(readme), 0o644))
			}
			_, err := generate(root, t.TempDir())
			require.ErrorContains(t, err, c.err)
		})
	}
}

// TestWriteOwnsOnlyItsFiles: suitegen replaces its own files and refuses a folder that holds
// anything else, removing nothing.
func TestWriteOwnsOnlyItsFiles(t *testing.T) {
	out := t.TempDir()
	require.NoError(t, write(out, map[string][]byte{"old/suite_test.go": []byte(header + "package old\n")}))
	require.NoError(t, write(out, map[string][]byte{"new/suite_test.go": []byte(header + "package new\n")}))
	require.NoDirExists(t, filepath.Join(out, "old"))
	require.FileExists(t, filepath.Join(out, "new", "suite_test.go"))

	require.NoError(t, os.WriteFile(filepath.Join(out, "mine.go"), []byte("package mine\n"), 0o644))
	err := write(out, nil)
	require.ErrorContains(t, err, "mine.go was not made by suitegen")
	require.FileExists(t, filepath.Join(out, "new", "suite_test.go"))
}

// firstDifference returns the first line where want and got differ, counted from 1, and the
// two lines there ("" past an end); 0 if they are the same.
func firstDifference(want, got string) (int, string, string) {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl || i >= len(w) || i >= len(g) {
			return i + 1, wl, gl
		}
	}
	return 0, "", ""
}

// goCommand is the go command of this test, run in this module's folder.
func goCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	wd, err := os.Getwd()
	require.NoError(t, err)
	cmd := exec.Command("go", args...)
	cmd.Dir = wd
	cmd.Env = os.Environ()
	return cmd
}
