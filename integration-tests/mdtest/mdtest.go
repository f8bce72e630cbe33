// Package mdtest runs an example of deployments-k8s as its README tells a person to: every bash
// block of its Run section in order, then, even when one fails, every block of its Cleanup
// section. It is the runtime of the suites that suitegen compiles from the READMEs (the
// packages under integration-tests/k8s), and its Parse is the reader of those READMEs. It
// exists so that the examples a person copies are the ones CI runs, step for step.
//
// What callers rely on:
//   - A step is `bash -euo pipefail`, started in the workspace's root, where a person following
//     the READMEs stands (so `kubectl apply -k deployments-k8s/examples/basic` works), with
//     KUBECONFIG naming the suite's cluster and the cluster's programs (kubectl) first on PATH.
//     Each step is a new bash, but the shell variables and the working folder a step leaves are
//     those the next step (and the cleanup) starts with, as in one terminal.
//   - As NSM's runner does, a failing step is run again, from the state the step before left,
//     until it passes or VWIRE_STEP_RETRY (a Go duration, default 1m; 0: once) has passed since
//     its first start, a second apart: `kubectl wait -l app=x` right after `kubectl apply` fails
//     until the pods exist. Each attempt gets VWIRE_STEP_TIMEOUT (default 5m).
//   - A failing step fails the test with the example, the step's number, its README line, its
//     first lines and its output; the steps after it are skipped and the cleanup runs. A failing
//     cleanup step is reported and the next cleanup step still runs. Processes a step leaves in
//     the background are killed after the cleanup.
package mdtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Step is one bash block of a README.
type Step struct {
	// Line is the line of the block's opening fence in README.md.
	Line   int
	Script string
}

// Example is one example folder's README, as a test runs it.
type Example struct {
	// Name is the folder under the examples' root, slash-separated: "use-cases/Kernel2Kernel".
	Name    string
	Run     []Step
	Cleanup []Step
}

// Reporter is the part of testing.TB that a run of an example uses; a *testing.T is one.
type Reporter interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
}

// The defaults of VWIRE_STEP_TIMEOUT, which bounds one attempt of a block (long enough for a
// heal example's fault and recovery, short enough that a hung step ends within CI's budget), and
// of VWIRE_STEP_RETRY, how long a failing block is tried again (NSM's runner tries for a minute).
const (
	defaultStepTimeout = 5 * time.Minute
	defaultStepRetry   = time.Minute
	retryPause         = time.Second
)

// Suite is the examples that share a cluster and a setup: the examples they all require.
type Suite struct {
	// Workspace is the root of vwire's repository, relative to the test's working folder (its
	// package folder) or absolute: the steps run there, and the cluster's programs and state
	// are in its .build folder.
	Workspace string
	// Setup are the required examples, in the order they run: before the suite's tests, their
	// cleanup after them, in reverse.
	Setup []Example

	// env is the steps' environment, set by Main; nil means this process's.
	env []string
	// kubeconfig and bin are the cluster's admin kubeconfig and programs' folder, set by Main.
	kubeconfig, bin string
}

// Kubeconfig is the admin kubeconfig of the suite's cluster, once Main found or started it: for
// a test that talks to the cluster itself (a benchmark), beside the examples' steps.
func (s *Suite) Kubeconfig() string { return s.kubeconfig }

// Bin is the folder of the cluster's programs (kubectl among them), once Main has run.
func (s *Suite) Bin() string { return s.bin }

// Run runs ex's steps and registers its cleanup with r. It reports whether every step passed.
func (s *Suite) Run(r Reporter, ex Example) bool {
	r.Helper()
	state, err := os.CreateTemp("", "vw-mdtest-")
	if err != nil {
		r.Errorf("example %s: a file for the steps' shell state: %v", ex.Name, err)
		return false
	}
	_ = state.Close()
	var groups []int
	r.Cleanup(func() {
		_ = os.Remove(state.Name())
		for _, pgid := range groups {
			_ = syscall.Kill(-pgid, syscall.SIGKILL) // what a step left in the background; most are gone
		}
	})
	r.Cleanup(func() {
		r.Helper()
		for i, st := range ex.Cleanup {
			out, pgids, err := s.step(state.Name(), st)
			groups = append(groups, pgids...)
			if err != nil {
				r.Errorf("%s", failure(ex, "cleanup", i, len(ex.Cleanup), st, out, err))
				continue
			}
			r.Logf("example %s: cleanup step %d of %d (README.md line %d) passed:\n%s", ex.Name, i+1, len(ex.Cleanup), st.Line, out)
		}
	})
	for i, st := range ex.Run {
		out, pgids, err := s.step(state.Name(), st)
		groups = append(groups, pgids...)
		if err != nil {
			r.Errorf("%s", failure(ex, "step", i, len(ex.Run), st, out, err))
			return false
		}
		r.Logf("example %s: step %d of %d (README.md line %d) passed:\n%s", ex.Name, i+1, len(ex.Run), st.Line, out)
	}
	return true
}

// failure says which step of which example failed, how, and what it printed.
func failure(ex Example, kind string, i, n int, st Step, out string, err error) string {
	lines := strings.Split(st.Script, "\n")
	if len(lines) > 3 {
		lines = append(lines[:3], "...")
	}
	return fmt.Sprintf("example %s: %s %d of %d (README.md line %d) failed: %v\n    %s\noutput:\n%s",
		ex.Name, kind, i+1, n, st.Line, err, strings.Join(lines, "\n    "), out)
}

// keep is the prelude and epilogue of every step: the shell state of the step before is
// sourced, and this step's is written when it passes (bash's own read-only and per-process
// variables left out), so that a step tried again starts where the step before left.
const keep = `if [ -s "$VWIRE_MDTEST_STATE" ]; then source "$VWIRE_MDTEST_STATE"; fi
__vwire_keep() {
  [ "$1" = 0 ] || return 0
  local __vwire_v
  for __vwire_v in $(compgen -v); do
    case $__vwire_v in
      BASH*|EUID|PPID|UID|GROUPS|SHELLOPTS|FUNCNAME|PIPESTATUS|LINENO|RANDOM|SRANDOM|SECONDS|EPOCH*|DIRSTACK|HISTCMD|OPT*|PWD|OLDPWD|SHLVL|_|__vwire_v|VWIRE_MDTEST_STATE) ;;
      *) declare -p "$__vwire_v" ;;
    esac
  done >"$VWIRE_MDTEST_STATE"
  printf 'cd %q\n' "$PWD" >>"$VWIRE_MDTEST_STATE"
}
trap '__vwire_keep $?' EXIT
`

// step runs one block, again while it fails and VWIRE_STEP_RETRY allows, and returns the
// last attempt's output and the process groups of every attempt.
func (s *Suite) step(state string, st Step) (string, []int, error) {
	timeout, err := duration("VWIRE_STEP_TIMEOUT", defaultStepTimeout)
	if err == nil && timeout == 0 {
		err = errors.New("VWIRE_STEP_TIMEOUT is 0: give a positive Go duration such as 10m")
	}
	if err != nil {
		return "", nil, err
	}
	retry, err := duration("VWIRE_STEP_RETRY", defaultStepRetry)
	if err != nil {
		return "", nil, err
	}
	var groups []int
	start := time.Now()
	for attempt := 1; ; attempt++ {
		out, pgid, err := s.attempt(state, st, timeout)
		if pgid > 0 { // 0: nothing started, and kill(-0) would reach the test's own group
			groups = append(groups, pgid)
		}
		if err == nil || time.Since(start)+retryPause > retry {
			if err != nil && attempt > 1 {
				err = fmt.Errorf("%w (attempt %d, tried for %v: VWIRE_STEP_RETRY)", err, attempt, retry)
			}
			return out, groups, err
		}
		time.Sleep(retryPause) // a poll: what the step waits for is outside this process
	}
}

// duration reads a positive Go duration (or 0) from the environment variable name.
func duration(name string, def time.Duration) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s is %q: give a Go duration such as 10m", name, v)
	}
	return d, nil
}

// attempt runs one block once and returns its output and process group.
func (s *Suite) attempt(state string, st Step, timeout time.Duration) (string, int, error) {
	// A file, not a pipe: a process the step leaves in the background keeps its output open,
	// and the step must still end when bash does.
	out, err := os.CreateTemp("", "vw-mdtest-out-")
	if err != nil {
		return "", 0, err
	}
	defer func() { _ = os.Remove(out.Name()) }()
	defer func() { _ = out.Close() }()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", keep+st.Script)
	cmd.Dir = s.Workspace
	env := s.env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = append(env[:len(env):len(env)], "VWIRE_MDTEST_STATE="+state)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	runErr := cmd.Run()
	pgid := 0
	if cmd.Process != nil {
		pgid = cmd.Process.Pid
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		runErr = fmt.Errorf("no end after %v (VWIRE_STEP_TIMEOUT): %w", timeout, runErr)
	}
	text, err := os.ReadFile(out.Name())
	return string(text), pgid, errors.Join(runErr, err)
}
