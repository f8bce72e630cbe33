package prober

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const script = "../../deployments-k8s/examples/prober.sh"

// run runs prober.sh with args and VWIRE_PROBER_DIR=dir and returns its exit code, stdout and
// stderr.
func run(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(script, args...)
	cmd.Env = append(os.Environ(), "VWIRE_PROBER_DIR="+dir)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running %s: %v", script, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// write writes text to a file of a fresh temporary folder and returns its path.
func write(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ping.log")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	return path
}

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		log, end string
		code     int
		out      string
	}{
		// 50 replies 16 ms apart, as ping -i 0.01 sends them here.
		{log: "clean.log", out: "loss window 0.017 s (0 lost in it, 0 lost in all), 50 replies in 0.8 s, one sent every 16 ms\n"},
		// The veth was deleted after 19 replies and made again 0.4 s later.
		{log: "healed.log", out: "loss window 0.456 s (27 lost in it, 27 lost in all), 38 replies in 1.0 s, one sent every 16 ms\n"},
		// The same with END (when stop ran) just after the last line.
		{log: "healed.log", end: "1796650226.70", out: "loss window 0.456 s (27 lost in it, 27 lost in all), 38 replies in 1.0 s, one sent every 16 ms\n"},
		// ... and long after it: nothing answered in the last second.
		{log: "healed.log", end: "1796650228", code: 1},
		// The veth was deleted and never made again; ping ran 1.8 s more.
		{log: "never-back.log", code: 1},
	} {
		t.Run(tc.log+" "+tc.end, func(t *testing.T) {
			args := []string{"report", filepath.Join("testdata", tc.log)}
			if tc.end != "" {
				args = append(args, tc.end)
			}
			code, out, errOut := run(t, t.TempDir(), args...)
			require.Equal(t, tc.code, code, "stderr: %s", errOut)
			require.Equal(t, tc.out, out)
			if tc.code != 0 {
				require.Regexp(t, `^no reply in the last [0-9.]+ s before the end \(the last at [0-9.]+, icmp_seq [0-9]+, after [0-9]+ replies\): the vWire never came back\n$`, errOut)
			}
		})
	}
}

// TestReportSeq checks the count of lost pings where ping's own numbers make it hard: icmp_seq
// starting again at 0 after 65535, duplicates, and a reply that came late.
func TestReportSeq(t *testing.T) {
	src, err := os.ReadFile("testdata/clean.log")
	require.NoError(t, err)
	seq := regexp.MustCompile(`icmp_seq=([0-9]+)`)
	shift := func(by int) string {
		return seq.ReplaceAllStringFunc(string(src), func(m string) string {
			n, _ := strconv.Atoi(strings.TrimPrefix(m, "icmp_seq="))
			return fmt.Sprintf("icmp_seq=%d", (n+by)%65536)
		})
	}
	// The 50 replies numbered 65511 to 65535 and 0 to 24.
	_, out, _ := run(t, t.TempDir(), "report", write(t, shift(65510)))
	require.Equal(t, "loss window 0.017 s (0 lost in it, 0 lost in all), 50 replies in 0.8 s, one sent every 16 ms\n", out)

	lines := strings.Split(shift(65510), "\n")
	var kept []string
	for i, l := range lines {
		switch {
		case strings.Contains(l, "icmp_seq=65535 "), strings.Contains(l, "icmp_seq=0 "):
			continue // lost across the wrap: the gap is from 65534 to 1
		case strings.Contains(l, "icmp_seq=5 "):
			kept = append(kept, l, l+" (DUP!)")
		case strings.Contains(l, "icmp_seq=10 "):
			kept = append(kept, lines[i-1])
			// ping -D prints the time the reply came; one for 9, again, late.
			kept = append(kept, strings.Replace(l, "icmp_seq=10 ", "icmp_seq=9 ", 1), l)
		default:
			kept = append(kept, l)
		}
	}
	code, out, errOut := run(t, t.TempDir(), "report", write(t, strings.Join(kept, "\n")))
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `^loss window 0\.04[0-9] s \(2 lost in it, 2 lost in all\), 48 replies in 0\.8 s, one sent every 16 ms\n$`, out)
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{nil, {"probe"}, {"start", "x"}, {"stop"}, {"clean"}, {"report"}, {"report", "a", "b", "c"}} {
		code, out, errOut := run(t, dir, args...)
		require.Equal(t, 2, code, "args %q", args)
		require.Empty(t, out)
		require.Contains(t, errOut, "usage: "+script+" start NAME NAMESPACE LABEL-SELECTOR ADDRESS\n")
	}
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"stop", "../etc"}, `NAME "../etc": use letters, digits`},
		{[]string{"clean", ".."}, `NAME "..": use letters, digits`},
		{[]string{"start", "a/b", "ns", "app=x", "10.0.0.1"}, `NAME "a/b": use letters, digits`},
		{[]string{"stop", "never-started"}, "prober never-started: no output in " + dir + "/never-started: run \"" + script + " start never-started ...\" first"},
		{[]string{"report", filepath.Join(dir, "none")}, "report: cannot read the ping output " + dir + "/none"},
		{[]string{"report", "testdata/clean.log", "yesterday"}, `report: END "yesterday" is not seconds since the epoch`},
		{[]string{"report", "/dev/null"}, "no reply at all in /dev/null: was the vWire up when the prober started?"},
	} {
		code, out, errOut := run(t, dir, tc.args...)
		require.Equal(t, 1, code, "args %q: %s", tc.args, errOut)
		require.Empty(t, out)
		require.Contains(t, errOut, tc.err)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "bad input changes nothing")
}

// TestStop stops a real ping as a heal example's last step does, twice (a step tried again
// reports the same record), and checks the ping has ended.
func TestStop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("ping -i 0.01 needs root; run as root")
	}
	dir := t.TempDir()
	probe := filepath.Join(dir, "lo")
	done := startPing(t, probe)

	code, out, errOut := run(t, dir, "stop", "lo")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `^prober lo: loss window 0\.[0-9]{3} s \(0 lost in it, 0 lost in all\), [0-9]+ replies in [0-9.]+ s, one sent every [0-9]+ ms\n$`, out)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ping still runs after stop")
	}
	require.NoFileExists(t, filepath.Join(probe, "pid"))

	code, again, errOut := run(t, dir, "stop", "lo")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, out, again)

	code, out, errOut = run(t, dir, "clean", "lo")
	require.Equal(t, 0, code, errOut)
	require.Empty(t, out)
	require.NoDirExists(t, probe)
}

// TestClean stops a ping that still runs, as an example's cleanup does after a step before stop
// failed, and removes its folder; a prober that never started is no error.
func TestClean(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("ping -i 0.01 needs root; run as root")
	}
	dir := t.TempDir()
	code, out, errOut := run(t, dir, "clean", "never-started")
	require.Equal(t, 0, code, errOut)
	require.Empty(t, out+errOut)

	probe := filepath.Join(dir, "lo")
	done := startPing(t, probe)
	code, out, errOut = run(t, dir, "clean", "lo")
	require.Equal(t, 0, code, errOut)
	require.Empty(t, out+errOut)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ping still runs after clean")
	}
	require.NoDirExists(t, probe)
}

// startPing starts a ping of the loopback as prober.sh start does, its output and pid in the
// folder probe, and returns once 20 replies came; the channel is closed when the ping ended.
func startPing(t *testing.T, probe string) <-chan struct{} {
	t.Helper()
	require.NoError(t, os.Mkdir(probe, 0o755))
	log, err := os.Create(filepath.Join(probe, "ping.log"))
	require.NoError(t, err)
	defer func() { _ = log.Close() }()
	ping := exec.Command("ping", "-D", "-O", "-i", "0.01", "-W", "1", "127.0.0.1")
	ping.Stdout, ping.Stderr = log, log
	require.NoError(t, ping.Start())
	done := make(chan struct{})
	go func() {
		_ = ping.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = ping.Process.Kill()
		<-done
	})
	require.NoError(t, os.WriteFile(filepath.Join(probe, "pid"), []byte(strconv.Itoa(ping.Process.Pid)+"\n"), 0o600))
	require.Eventually(t, func() bool {
		text, err := os.ReadFile(log.Name())
		return err == nil && strings.Count(string(text), " bytes from ") >= 20
	}, 10*time.Second, 10*time.Millisecond)
	return done
}

// FuzzReport feeds the report anything: it answers with exit code 0 or 1 and its own message,
// never an error of awk or bash.
func FuzzReport(f *testing.F) {
	for _, name := range []string{"clean.log", "healed.log", "never-back.log"} {
		src, err := os.ReadFile(filepath.Join("testdata", name))
		require.NoError(f, err)
		f.Add(src)
	}
	f.Add([]byte("[1.5] 64 bytes from x: icmp_seq=99999999999999999999 ttl=1\n[0] 1 bytes from icmp_seq=0\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		code, _, errOut := run(t, t.TempDir(), "report", write(t, string(src)))
		if code != 0 {
			require.Equal(t, 1, code, errOut)
			require.Regexp(t, `^(no reply at all in .*: was the vWire up when the prober started\?|no reply in the last .*: the vWire never came back)\n$`, errOut)
		}
	})
}
