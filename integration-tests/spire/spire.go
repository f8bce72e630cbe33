// Package spire runs a real SPIRE server and agent for a test: the SPIFFE Workload API that
// vwire's components take their identities from in a deployment, here on loopback and in a
// temporary folder, from the programs `make spire-bins` builds (tools/spire). Tests of
// identities, rotation and Workload API outages then meet the server they will meet in a
// cluster, not a fake.
//
// The agent attests itself to the server with a join token; it attests workloads with the unix
// attestor, which also reads each workload's binary path (discover_workload_path), so that each
// program can get a SPIFFE ID of its own: RegisterBinary. The programs come from
// $VWIRE_KUBE_BIN (the Makefile exports it), else from .build/bin of the workspace; a test whose
// programs are missing fails and says how to build them: CI builds them, so it is never skipped.
//
// What callers rely on:
//   - Start returns once the agent serves the Workload API at Socket (SPIFFE_ENDPOINT_SOCKET is
//     Endpoint()); each Start is independent: its own folder, sockets and port;
//   - an entry made by Register reaches the agent within about a second (both sync every
//     second instead of SPIRE's five);
//   - StopAgent and StartAgent restart the agent with the SVID and trust bundle it keeps in its
//     data folder (a join token is good once), at the same Socket; the server keeps running;
//   - Options.X509SVIDTTL sets the workloads' SVID lifetime, which is how rotation is tested:
//     the server backdates each SVID 10 s and the agent renews it once less than half of that
//     whole span is left, (TTL-10s)/2 after issue, so an SVID of 10 s or less is renewed at
//     every sync, about every second; the agent's own SVID lives an hour regardless;
//   - t.Cleanup stops both processes and removes the folder, even when the test failed; then the
//     end of each one's log is in the test's output.
package spire

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// binEnv names the variable holding the folder with spire-server and spire-agent.
const binEnv = "VWIRE_KUBE_BIN"

const (
	// startTimeout bounds each program's start; both are healthy in under a second here.
	startTimeout = 30 * time.Second
	// stopTimeout is how long a program has to stop after SIGTERM before it is killed.
	stopTimeout = 10 * time.Second
	// logTail is how many lines of each log a failed test shows.
	logTail = 40
)

// Options configures Start. Zero values take defaults.
type Options struct {
	// TrustDomain of the server, the agent and every SVID. Default: vwire.test.
	TrustDomain spiffeid.TrustDomain
	// X509SVIDTTL is the lifetime of the workloads' X.509 SVIDs; at 10 s or less they rotate
	// about every second. Default: SPIRE's, an hour.
	X509SVIDTTL time.Duration
	// BinDir holds spire-server and spire-agent. Default: $VWIRE_KUBE_BIN, else .build/bin of
	// the workspace.
	BinDir string
}

// SPIRE is a running server and agent.
type SPIRE struct {
	TrustDomain spiffeid.TrustDomain
	// Socket is the path of the agent's Workload API socket.
	Socket string
	// AgentID is the agent's SPIFFE ID (its join token's alias): the parent of every entry
	// made by Register.
	AgentID spiffeid.ID

	bin    string
	dir    string
	server *process
	agent  *process
}

// Start starts a SPIRE server and agent for the test, both stopped and their folder removed in
// t.Cleanup.
func Start(t testing.TB, opts Options) *SPIRE {
	t.Helper()
	bin, err := binDir(opts.BinDir)
	if err != nil {
		t.Fatal(err)
	}
	td := opts.TrustDomain
	if td.IsZero() {
		td = spiffeid.RequireTrustDomainFromString("vwire.test")
	}
	// Sockets live here: a unix socket's path has to fit in 108 bytes, which t.TempDir's may not.
	dir, err := os.MkdirTemp("", "vw-spire")
	if err != nil {
		t.Fatal(err)
	}
	s := &SPIRE{TrustDomain: td, Socket: filepath.Join(dir, "agent", "api.sock"), bin: bin, dir: dir}
	t.Cleanup(func() { s.cleanup(t) })

	port, err := freePort()
	if err != nil {
		t.Fatalf("spire: a free port for the server: %v", err)
	}
	if err := s.writeConfig(port, opts.X509SVIDTTL); err != nil {
		t.Fatalf("spire: write the configuration in %s: %v", dir, err)
	}
	if s.server, err = start(s.program("spire-server"), s.path("server.log"), "run", "-config", s.path("server.conf")); err != nil {
		t.Fatal(err)
	}
	if err := s.waitHealthy("spire-server", s.server, s.serverSocket()); err != nil {
		t.Fatal(err)
	}

	bundle, err := s.serverCLI("bundle show")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path("bundle.pem"), []byte(bundle), 0o600); err != nil {
		t.Fatal(err)
	}
	// Entries name the token's alias as their parent, an ID known before the agent starts,
	// rather than the join token's own (spire/agent/join_token/<token>).
	s.AgentID = spiffeid.RequireFromSegments(td, "vwire", "agent")
	out, err := s.serverCLI("token generate", "-ttl", "600", "-spiffeID", s.AgentID.String())
	if err != nil {
		t.Fatal(err)
	}
	token, ok := strings.CutPrefix(strings.TrimSpace(out), "Token: ")
	if !ok || strings.ContainsAny(token, " \n") {
		t.Fatalf("spire: `spire-server token generate` printed %q, not a line Token: <token>", out)
	}
	s.startAgent(t, "-joinToken", token)
	return s
}

// Endpoint is the Workload API's address as SPIFFE_ENDPOINT_SOCKET and go-spiffe take it.
func (s *SPIRE) Endpoint() string { return "unix://" + s.Socket }

// Register makes a registration entry: the agent gives id to the workloads that match every
// selector (unix:uid:0, unix:path:/usr/bin/x, ...).
func (s *SPIRE) Register(t testing.TB, id spiffeid.ID, selectors ...string) {
	t.Helper()
	if len(selectors) == 0 {
		t.Fatalf("spire: Register %s without selectors: give at least one, such as unix:uid:0", id)
	}
	flags := []string{"-parentID", s.AgentID.String(), "-spiffeID", id.String()}
	for _, sel := range selectors {
		flags = append(flags, "-selector", sel)
	}
	if _, err := s.serverCLI("entry create", flags...); err != nil {
		t.Fatal(err)
	}
}

// RegisterBinary gives id to the processes of this user that run the program at path, which
// need not exist yet: each of vwire's commands gets an identity of its own. The attestor
// compares the path of /proc/<pid>/exe: absolute, its links resolved; give such a path.
func (s *SPIRE) RegisterBinary(t testing.TB, id spiffeid.ID, path string) {
	t.Helper()
	if !filepath.IsAbs(path) {
		t.Fatalf("spire: RegisterBinary %s: the path %q is relative; the attestor sees absolute ones", id, path)
	}
	s.Register(t, id, "unix:uid:"+strconv.Itoa(os.Geteuid()), "unix:path:"+filepath.Clean(path))
}

// StopAgent stops the agent, as a restart or an upgrade does: the Workload API is away until
// StartAgent. Workloads keep the SVIDs they have.
func (s *SPIRE) StopAgent(t testing.TB) {
	t.Helper()
	if s.agent == nil {
		t.Fatal("spire: StopAgent: the agent is not running")
	}
	err := s.agent.stop()
	s.agent = nil
	if err != nil {
		t.Fatal(err)
	}
}

// StartAgent starts the agent StopAgent stopped, with the SVID and bundle it kept, and returns
// once it serves the Workload API again.
func (s *SPIRE) StartAgent(t testing.TB) {
	t.Helper()
	if s.agent != nil {
		t.Fatal("spire: StartAgent: the agent is running already")
	}
	s.startAgent(t)
}

func (s *SPIRE) startAgent(t testing.TB, args ...string) {
	t.Helper()
	var err error
	args = append([]string{"run", "-config", s.path("agent.conf")}, args...)
	if s.agent, err = start(s.program("spire-agent"), s.path("agent.log"), args...); err != nil {
		t.Fatal(err)
	}
	if err := s.waitHealthy("spire-agent", s.agent, s.Socket); err != nil {
		t.Fatal(err)
	}
}

// path is a file of the test's folder.
func (s *SPIRE) path(name string) string { return filepath.Join(s.dir, name) }

// program is a program of the bin folder.
func (s *SPIRE) program(name string) string { return filepath.Join(s.bin, name) }

func (s *SPIRE) serverSocket() string { return filepath.Join(s.dir, "server", "api.sock") }

// writeConfig writes both programs' configurations. Keys of the agent live on disk, so that a
// restarted agent still has the SVID its join token got; the server's data is its own SQLite.
func (s *SPIRE) writeConfig(port int, svidTTL time.Duration) error {
	ttl := ""
	if svidTTL > 0 {
		ttl = fmt.Sprintf("default_x509_svid_ttl = %q", svidTTL.String())
	}
	server := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "DEBUG"
  agent_ttl = "1h"
  %s
  experimental { cache_reload_interval = "1s" }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  KeyManager "memory" { plugin_data {} }
  NodeAttestor "join_token" { plugin_data {} }
}
`, port, s.serverSocket(), s.TrustDomain.Name(), s.path("server"), ttl, s.path("server/datastore.sqlite3"))
	agent := fmt.Sprintf(`agent {
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_domain = %q
  trust_bundle_path = %q
  data_dir = %q
  log_level = "DEBUG"
  experimental { sync_interval = "1s" }
}
plugins {
  NodeAttestor "join_token" { plugin_data {} }
  KeyManager "disk" { plugin_data { directory = %q } }
  WorkloadAttestor "unix" { plugin_data { discover_workload_path = true } }
}
`, port, s.Socket, s.TrustDomain.Name(), s.path("bundle.pem"), s.path("agent"), s.path("agent"))
	for _, sub := range []string{"server", "agent"} {
		if err := os.Mkdir(s.path(sub), 0o700); err != nil {
			return err
		}
	}
	return errors.Join(os.WriteFile(s.path("server.conf"), []byte(server), 0o600),
		os.WriteFile(s.path("agent.conf"), []byte(agent), 0o600))
}

// serverCLI runs a spire-server command ("entry create") with flags against the running server
// and returns what it printed on its standard output.
func (s *SPIRE) serverCLI(command string, flags ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	args := append(append(strings.Fields(command), "-socketPath", s.serverSocket()), flags...)
	cmd := exec.CommandContext(ctx, s.program("spire-server"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr // warnings, such as token generate's about a token without an alias
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("spire: spire-server %s %s: %w: %s", command, strings.Join(flags, " "), err, bytes.TrimSpace(append(out, stderr.Bytes()...)))
	}
	return string(out), nil
}

// waitHealthy polls the program's healthcheck on its socket until it passes, the program exits
// or startTimeout passes.
func (s *SPIRE) waitHealthy(name string, p *process, socket string) error {
	deadline := time.Now().Add(startTimeout)
	for {
		err := exec.Command(s.program(name), "healthcheck", "-socketPath", socket).Run()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("spire: %s exited at its start (%v); its log is %s", name, p.err, p.log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("spire: %s not healthy on %s after %v (%v); its log is %s", name, socket, startTimeout, err, p.log)
		}
	}
}

// cleanup stops both programs, shows the end of their logs when the test failed, and removes
// the folder.
func (s *SPIRE) cleanup(t testing.TB) {
	for _, p := range []*process{s.agent, s.server} {
		if p != nil {
			if err := p.stop(); err != nil {
				t.Error(err)
			}
		}
	}
	if t.Failed() {
		for _, name := range []string{"server.log", "agent.log"} {
			if b, err := os.ReadFile(s.path(name)); err == nil {
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				t.Logf("spire: the end of %s:\n%s", name, strings.Join(lines[max(0, len(lines)-logTail):], "\n"))
			}
		}
	}
	if err := os.RemoveAll(s.dir); err != nil {
		t.Errorf("spire: remove %s: %v", s.dir, err)
	}
}

// process is a running program whose output goes to a log file.
type process struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once the program exited and err is set
	err  error
}

func start(program, log string, args ...string) (*process, error) {
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own copy
	cmd := exec.Command(program, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a ^C of the test's terminal reaches the test, which stops it. Killed
	// with the test's process: a test that times out panics without running t.Cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("spire: start %s: %w", program, err)
	}
	p := &process{cmd: cmd, log: log, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// stop asks the program to stop and kills it when it has not after stopTimeout.
func (p *process) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("spire: %s did not stop within %v of SIGTERM and was killed; its log is %s", p.cmd.Path, stopTimeout, p.log)
}

// binDir returns the folder holding spire-server and spire-agent, or an error saying how to
// build them.
func binDir(dir string) (string, error) {
	dir = cmp.Or(dir, os.Getenv(binEnv))
	if dir == "" {
		out, err := exec.Command("go", "env", "GOWORK").Output()
		work := strings.TrimSpace(string(out))
		if err != nil || work == "" || work == "off" {
			return "", fmt.Errorf("spire: %s is not set and no go.work was found (%v); run `make spire-bins` in vwire's repository and set %s to its .build/bin", binEnv, err, binEnv)
		}
		dir = filepath.Join(filepath.Dir(work), ".build", "bin")
	}
	for _, name := range []string{"spire-server", "spire-agent"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("spire: no %s in %s; run `make spire-bins` in vwire's repository (it builds SPIRE from the Go module proxy)", name, dir)
		}
	}
	return dir, nil
}

// freePort returns a TCP port free on loopback now, for the server's agent API.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
