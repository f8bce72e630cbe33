package nsmport

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var programs = []string{"nse", "nsc"}

// TestThePortsBuild builds and vets each port in the workspace.
func TestThePortsBuild(t *testing.T) {
	goTool, err := exec.LookPath("go")
	require.NoError(t, err, "the test builds the ports with the go command")
	out := t.TempDir()
	for _, p := range programs {
		dir := "./testdata/vwire/" + p
		for _, args := range [][]string{{"vet", dir}, {"build", "-o", filepath.Join(out, p), dir}} {
			cmd := exec.Command(goTool, args...)
			got, err := cmd.CombinedOutput()
			require.NoError(t, err, "go %s:\n%s", strings.Join(args, " "), got)
		}
	}
}

// TestThePortsChangeLittleAndSaySo: each port changes at most MaxChangedLines lines beyond its
// import block, the NSM program uses NSM's sdk and the port none of it, and every changed line,
// as NSM's program has it and as the port has it, is in MIGRATING.md.
func TestThePortsChangeLittleAndSaySo(t *testing.T) {
	guide, err := os.ReadFile("../../MIGRATING.md")
	require.NoError(t, err)
	for _, p := range programs {
		t.Run(p, func(t *testing.T) {
			nsmImports, nsmBody := split(t, read(t, "testdata/nsm/"+p+"/main.go"))
			vwImports, vwBody := split(t, read(t, "testdata/vwire/"+p+"/main.go"))
			require.True(t, slices.ContainsFunc(nsmImports, func(l string) bool {
				return strings.Contains(l, `"github.com/networkservicemesh/sdk/`)
			}), "the NSM program is written with NSM's sdk")
			for _, l := range vwImports {
				require.NotContains(t, l, "github.com/networkservicemesh/sdk", "the port imports no NSM sdk module")
			}
			hunks := diff(nsmBody, vwBody)
			changed := 0
			for _, h := range hunks {
				changed += max(len(h.removed), len(h.added))
			}
			t.Logf("%s: %d of %d body lines changed, in %d places", p, changed, len(nsmBody), len(hunks))
			require.LessOrEqual(t, changed, MaxChangedLines, "the port of %s changes too much", p)
			if count := fmt.Sprintf("%d of %d", changed, len(nsmBody)); !strings.Contains(string(guide), count) {
				t.Errorf("MIGRATING.md does not give the count of %s: %s", p, count)
			}
			for _, h := range hunks {
				for _, l := range append(slices.Clone(h.removed), h.added...) {
					if l = strings.TrimSpace(l); l != "" && !strings.Contains(string(guide), l) {
						t.Errorf("MIGRATING.md does not list this changed line of %s:\n\t%s", p, l)
					}
				}
			}
		})
	}
}

func read(t *testing.T, path string) []string {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// split returns the lines of the import block and the others.
func split(t *testing.T, lines []string) (imports, rest []string) {
	start := slices.Index(lines, "import (")
	require.GreaterOrEqual(t, start, 0, "no import block")
	end := slices.Index(lines[start:], ")")
	require.Greater(t, end, 0, "the import block does not end")
	end += start
	return lines[start : end+1], append(slices.Clone(lines[:start]), lines[end+1:]...)
}

// hunk is a run of lines the port replaced.
type hunk struct{ removed, added []string }

// diff returns the hunks that turn a into b, along a longest common subsequence of lines.
func diff(a, b []string) []hunk {
	// lcs[i][j] is the length of the longest common subsequence of a[i:] and b[j:].
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var hunks []hunk
	var cur hunk
	flush := func() {
		if len(cur.removed)+len(cur.added) > 0 {
			hunks = append(hunks, cur)
		}
		cur = hunk{}
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			flush()
			i, j = i+1, j+1
		case j < len(b) && (i == len(a) || lcs[i][j+1] >= lcs[i+1][j]):
			cur.added = append(cur.added, b[j])
			j++
		default:
			cur.removed = append(cur.removed, a[i])
			i++
		}
	}
	flush()
	return hunks
}

// TestDiffCounts: the counter the limit rests on counts a replaced line once, and an added or
// removed line each.
func TestDiffCounts(t *testing.T) {
	a := []string{"x", "old", "y", "gone", "z"}
	b := []string{"x", "new", "y", "z", "extra"}
	hunks := diff(a, b)
	require.Equal(t, []hunk{{removed: []string{"old"}, added: []string{"new"}}, {removed: []string{"gone"}}, {added: []string{"extra"}}}, hunks)
	require.Empty(t, diff(a, a))
}
