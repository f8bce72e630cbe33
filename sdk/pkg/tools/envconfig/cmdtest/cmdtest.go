// Package cmdtest runs a command's real binary in its tests: built once (Main or Build, from
// TestMain), started with exactly the environment the test gives (Start, Run), stopped by
// signal, killed and waited for in t.Cleanup if the test did not, and its output kept for
// assertions. It also checks the golden files and README tables of commands (CheckDocs, Golden,
// Section).
//
// Every process has a SPIFFE identity, as in a deployment: a test binary has a trust domain of
// its own (TrustDomain, made at first use), Start gives each process an SVID of it in files
// (NSM_IDENTITY_DIR) unless the test gives it an identity itself, and Dial connects with mutual
// TLS as spiffe://<TrustDomain>/test (DialOptions, for the test's own clients).
//
// Guarantees: a started process never outlives its test, and never sees a variable of the
// test's own environment (an NSM_* variable in the shell that runs the tests changes nothing).
// A binary built by a test binary that has the race detector has it too.
package cmdtest

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/health/grpc_health_v1"

	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/hopurl"
)

var update = flag.Bool("update", false, "rewrite golden files and README sections from what the test got")

// WaitLimit bounds every wait for a process to exit; past it the process is killed and the
// test fails.
const WaitLimit = 30 * time.Second

// Main is a command's TestMain: it builds each main package of builds (its import path, "." for
// the test's own) and stores the binary's path where builds says, runs the tests, checks that
// they left no goroutine (goleak), removes the binaries and exits.
func Main(m *testing.M, builds map[string]*string) {
	var removes []func()
	removeAll := func() {
		for _, remove := range removes {
			remove()
		}
	}
	for pkg, bin := range builds {
		path, remove, err := Build(pkg)
		if err != nil {
			removeAll()
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		*bin, removes = path, append(removes, remove)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeAll()
		os.Exit(code)
	}))
}

// CheckDocs checks what a command says of its variables: the output of bin --help against
// testdata/help.golden, and the table of spec's variables (envconfig.Markdown) against the
// section "variables" of README.md. Both are rewritten with -update.
func CheckDocs(t *testing.T, bin string, spec any) {
	t.Helper()
	code, stdout, stderr := Run(t, bin, nil, "--help")
	if code != 0 || stderr != "" {
		t.Fatalf("cmdtest: %s --help exited with %d; stderr:\n%s", bin, code, stderr)
	}
	Golden(t, filepath.Join("testdata", "help.golden"), stdout)
	var table strings.Builder
	if err := envconfig.Markdown(&table, spec); err != nil {
		t.Fatal(err)
	}
	Section(t, "README.md", "variables", table.String())
}

// Build builds the main package pkg ("." for the test's own) into a new temporary directory,
// and returns the binary and a function that removes it. It builds with -race when the test
// binary has the race detector.
func Build(pkg string) (bin string, remove func(), err error) {
	dir, err := os.MkdirTemp("", "vw-bin")
	if err != nil {
		return "", nil, err
	}
	remove = func() { _ = os.RemoveAll(dir) }
	bin = filepath.Join(dir, "cmd")
	args := []string{"build", "-o", bin}
	if raceEnabled() {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, pkg)...).CombinedOutput()
	if err != nil {
		remove()
		return "", nil, fmt.Errorf("cmdtest: go build %s: %w\n%s", pkg, err, out)
	}
	return bin, remove, nil
}

func raceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// Process is a started command.
type Process struct {
	t              testing.TB
	cmd            *exec.Cmd
	stdout, stderr buffer
	done           chan struct{}
	code           int
}

// Start starts bin with args and with env (NAME=value) as its whole environment, plus an
// identity (Identity, named after bin and NSM_NAME, so that a process started again has the same)
// when env has none of SPIFFE_ENDPOINT_SOCKET, NSM_IDENTITY_DIR and NSM_INSECURE. The process is
// killed, if still running, and waited for when the test ends.
func Start(t testing.TB, bin string, env []string, args ...string) *Process {
	t.Helper()
	p := &Process{t: t, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = append([]string{}, env...) // never nil: nil would mean the test's environment
	if !hasIdentity(env) {
		p.cmd.Env = append(p.cmd.Env, Identity(t, processName(bin, env)))
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("cmdtest: start %s: %v", bin, err)
	}
	go func() {
		defer close(p.done)
		err := p.cmd.Wait()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			p.code = exit.ExitCode() // -1 when a signal killed it
		case err != nil:
			p.code = -1
		}
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// Run runs bin to its end and returns its exit code and output.
func Run(t testing.TB, bin string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := Start(t, bin, env, args...)
	code = p.Wait()
	return code, p.Stdout(), p.Stderr()
}

// Fails runs bin to its end, checks that it failed as a command should (exit code 1, nothing on
// stdout, exactly one line on stderr) and returns that line and how long the run took.
func Fails(t testing.TB, bin string, env []string, args ...string) (line string, took time.Duration) {
	t.Helper()
	start := time.Now()
	code, stdout, stderr := Run(t, bin, env, args...)
	took = time.Since(start)
	line, rest, _ := strings.Cut(stderr, "\n")
	if code != 1 || stdout != "" || rest != "" || line == "" {
		t.Fatalf("cmdtest: want exit code 1 and one line on stderr, got %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	return line, took
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("cmdtest: signal %v: %v", sig, err)
	}
}

// Stop sends SIGTERM and returns the exit code.
func (p *Process) Stop() int {
	p.t.Helper()
	p.Signal(syscall.SIGTERM)
	return p.Wait()
}

// Wait waits for the process to exit, at most WaitLimit, and returns its exit code.
func (p *Process) Wait() int {
	p.t.Helper()
	timer := time.NewTimer(WaitLimit)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.code
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("cmdtest: %s still running after %s; killed it; stderr:\n%s", p.cmd.Path, WaitLimit, p.Stderr())
		return -1
	}
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Pid returns the process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stdout returns what the process wrote to stdout so far.
func (p *Process) Stdout() string { return p.stdout.String() }

// Stderr returns what the process wrote to stderr so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// WaitStderr waits until the process wrote s to stderr, at most WaitLimit, and fails the test
// if it exits or the time runs out first.
func (p *Process) WaitStderr(s string) {
	p.t.Helper()
	timer := time.NewTimer(WaitLimit)
	defer timer.Stop()
	for {
		text, changed := p.stderr.contents()
		if strings.Contains(text, s) {
			return
		}
		select {
		case <-changed:
		case <-p.done:
			if text, _ := p.stderr.contents(); !strings.Contains(text, s) {
				p.t.Fatalf("cmdtest: %s exited with %d before writing %q; stderr:\n%s", p.cmd.Path, p.code, s, text)
			}
			return
		case <-timer.C:
			p.t.Fatalf("cmdtest: %s did not write %q within %s; stderr:\n%s", p.cmd.Path, s, WaitLimit, p.Stderr())
		}
	}
}

// buffer is a bytes.Buffer written by the process's copier while the test reads it.
type buffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced at every write
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
	return b.buf.Write(p)
}

func (b *buffer) String() string {
	s, _ := b.contents()
	return s
}

// contents returns what was written and a channel closed at the next write.
func (b *buffer) contents() (string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	return b.buf.String(), b.changed
}

// Dial returns a gRPC connection to u (unix:///path or tcp://host:port) that retries every few
// tens of milliseconds while a process is starting (gRPC's default waits a second after the
// first failure), closed when the test ends. It connects as spiffe://<TrustDomain>/test, and
// sends that identity's tokens with every call.
func Dial(t testing.TB, u string) *grpc.ClientConn {
	t.Helper()
	return DialAs(t, u, "test")
}

// DialAs is Dial as the client named name (ID).
func DialAs(t testing.TB, u, name string) *grpc.ClientConn {
	t.Helper()
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	target, err := hopurl.Target(parsed)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(target, append(RegistryDialOptions(t, name),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.5, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// WaitServing waits until the health service at cc (grpc.health.v1, service "") says SERVING,
// at most WaitLimit: a started command serves from then on.
func WaitServing(t testing.TB, cc *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
	defer cancel()
	watch, err := grpc_health_v1.NewHealthClient(cc).Watch(ctx, &grpc_health_v1.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("cmdtest: watch the health of %s: %v", cc.Target(), err)
	}
	for {
		resp, err := watch.Recv()
		if err != nil {
			t.Fatalf("cmdtest: %s did not say SERVING: %v", cc.Target(), err)
		}
		if resp.GetStatus() == grpc_health_v1.HealthCheckResponse_SERVING {
			return
		}
	}
}

// TempDir returns a new directory with a short path (Linux caps socket paths at 107 bytes),
// removed when the test ends.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Golden checks that the file at path holds got; with -update it writes got there first.
func Golden(t testing.TB, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("cmdtest: %v (go test -update writes it)", err)
	}
	if string(want) != got {
		t.Errorf("cmdtest: %s differs from what the test got (go test -update rewrites it)\nwant:\n%s\ngot:\n%s", path, want, got)
	}
}

// Section checks that the file at path holds got between the lines <!-- begin name --> and
// <!-- end name -->; with -update it puts got there first.
func Section(t testing.TB, path, name, got string) {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	begin, end := "<!-- begin "+name+" -->\n", "<!-- end "+name+" -->"
	before, rest, ok1 := strings.Cut(string(text), begin)
	have, after, ok2 := strings.Cut(rest, end)
	if !ok1 || !ok2 {
		t.Fatalf("cmdtest: %s has no section %q: add the lines %q and %q", path, name, strings.TrimSpace(begin), end)
	}
	if *update && have != got {
		have = got
		if err := os.WriteFile(path, []byte(before+begin+got+end+after), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if have != got {
		t.Errorf("cmdtest: section %q of %s differs from what the test got (go test -update rewrites it)\nwant:\n%s\ngot:\n%s", name, path, have, got)
	}
}
