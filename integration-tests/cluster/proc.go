package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is a program Up started in this process: Down waits for it so that no zombie and no
// goroutine outlives the cluster.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait returned
}

// start runs program from the bin folder with args, its output in logs/<node>-<program>.log, in
// node n's mount namespace and network namespace (n nil: a program of the control plane, in
// this machine's). The program gets a process group of its own, so a terminal's ^C reaches only
// `make cluster-up`.
func (c *Cluster) start(n *Node, program string, env []string, args ...string) error {
	name := program
	if n != nil {
		name = n.Name + "-" + program
	}
	log, err := os.OpenFile(filepath.Join(c.dir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = log.Close() }()
	cmd := exec.Command(filepath.Join(c.opts.BinDir, program), args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	run := cmd.Start
	if n != nil {
		run = func() error { return inNode(n, cmd.Start) }
	}
	if err := run(); err != nil {
		return fmt.Errorf("cluster: start %s: %w", name, err)
	}
	ch := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(ch.done)
	}()
	c.mu.Lock()
	c.children = append(c.children, ch)
	c.mu.Unlock()
	return nil
}

// exited says whether a child already ended (a component that dies at start), with its log's end.
func (c *Cluster) exited() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.children {
		select {
		case <-ch.done:
			return fmt.Errorf("cluster: %s exited (%v); its log ends:\n%s", ch.name, ch.cmd.ProcessState, logTail(filepath.Join(c.dir, "logs", ch.name+".log")))
		default:
		}
	}
	return nil
}

// logTail returns the last lines of a component's log, for an error a person can act on.
func logTail(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// process is a process of this machine, as /proc shows it.
type process struct {
	pid     int
	exe     string   // the program's path; empty for kernel threads and processes gone meanwhile
	cmdline []string // its arguments
	cgroups []string // its cgroup path in each hierarchy
}

// processes lists the machine's processes but this one.
func processes() ([]process, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var ps []process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		p := process{pid: pid}
		// A process may end while it is read: what is missing stays empty.
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		p.exe = strings.TrimSuffix(exe, " (deleted)")
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			p.cmdline = strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil {
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				if f := strings.SplitN(line, ":", 3); len(f) == 3 {
					p.cgroups = append(p.cgroups, f[2])
				}
			}
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// gone says whether pid has ended: no longer there, or a zombie its parent has not reaped.
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}

// stopAll sends SIGTERM to every pid, waits up to grace for them to end, then kills those left
// and waits for them too. It fails only if a process survives SIGKILL.
func stopAll(pids []int, grace time.Duration) error {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	if waitGone(pids, grace) {
		return nil
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if waitGone(pids, 10*time.Second) {
		return nil
	}
	var left []string
	for _, pid := range pids {
		if !gone(pid) {
			left = append(left, strconv.Itoa(pid))
		}
	}
	return fmt.Errorf("cluster: processes %s survive SIGKILL", strings.Join(left, ", "))
}

// waitGone polls until every pid has ended or timeout passes: these processes are not all
// children of this one (a cluster started by `make cluster-up`, shims), so there is nothing to wait on.
func waitGone(pids []int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if !slices.ContainsFunc(pids, func(pid int) bool { return !gone(pid) }) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// errNoWorkspace is returned when a default folder cannot be found.
var errNoWorkspace = errors.New("no go.work at or above the working directory")

// workspaceRoot returns the nearest folder at or above the working directory holding go.work.
func workspaceRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errNoWorkspace
		}
		dir = parent
	}
}
