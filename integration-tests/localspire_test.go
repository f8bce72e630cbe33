package integrationtests

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"vwire.dev/integration-tests/spire"
)

// TestLocalMeshSPIRE runs the local mesh with every process's identity from a real SPIRE agent
// (mesh.sh hands SPIFFE_ENDPOINT_SOCKET on), each program registered by its path so that it gets
// a SPIFFE ID of its own, with SVIDs of 10 s that SPIRE renews about every second. Every
// topology carries ping; a SPIRE agent restart loses no packet on a working vWire, and a client
// started while the agent is away connects once it is back; every server rotates its SVID under
// traffic, losing nothing, and a new client connects through the rotated ones.
func TestLocalMeshSPIRE(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the local mesh makes network namespaces: run as root (CI does)")
	}
	td := spiffeid.RequireTrustDomainFromString("spire.vwire.test")
	// Tokens as short as the SVIDs: every connection is refreshed, through every hop, while
	// the SVIDs rotate.
	const svidTTL, tokenLifetime = 10 * time.Second, 10 * time.Second
	s := spire.Start(t, spire.Options{TrustDomain: td, X509SVIDTTL: svidTTL})
	dir := newMesh(t) // after SPIRE: the mesh goes down first
	cmds, err := filepath.Glob("../cmd-*")
	require.NoError(t, err)
	for _, cmd := range cmds {
		name := filepath.Base(cmd)
		s.RegisterBinary(t, spiffeid.RequireFromPath(td, "/"+name), filepath.Join(dir, "bin", name))
	}
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", s.Endpoint())
	t.Setenv("MESH_TOKEN_LIFETIME", tokenLifetime.String())
	_, err = mesh(t, dir, "up")
	require.NoError(t, err)
	_, err = mesh(t, dir, "check")
	require.NoError(t, err, "every topology carries ping")

	run := filepath.Join(dir, "run")
	logs, err := filepath.Glob(filepath.Join(run, "*.log"))
	require.NoError(t, err)
	for _, log := range logs {
		name := strings.TrimSuffix(filepath.Base(log), ".log")
		args, err := os.ReadFile(filepath.Join(run, name+".args"))
		if err != nil {
			continue // not a process: a ping's record
		}
		fields := strings.Fields(string(args)) // name, namespace, program, variables
		require.GreaterOrEqual(t, len(fields), 3, "%s.args", name)
		want := "spiffe_id=" + spiffeid.RequireFromPath(td, "/"+fields[2]).String() + " from=SPIFFE_ENDPOINT_SOCKET"
		require.Contains(t, readFile(t, log), want, "%s holds its program's SVID from SPIRE", name)
	}
	servers, err := filepath.Glob(filepath.Join(run, "*.sock"))
	require.NoError(t, err)
	require.NotEmpty(t, servers)

	// The agent restarts under traffic; a client starts while it is away.
	var back time.Time
	record := pingDuring(t, func() {
		s.StopAgent(t)
		_, err := mesh(t, dir, "restart", "nsc-k2wg2k")
		require.NoError(t, err)
		s.StartAgent(t)
		back = time.Now()
	})
	report, lost := lossReport(t, record)
	t.Logf("SPIRE agent restarted under traffic: %s", report)
	require.Zero(t, lost, "the k2k vWire lost pings while the agent restarted")
	waitConnected(t, run, "nsc-k2wg2k", 2)
	t.Logf("a client started while the agent was away connected %v after the agent was back", time.Since(back).Round(time.Millisecond))
	require.True(t, pingOnce("vw-nsc-k2wg2k"), "its vWire carries ping")
	again := time.Now()
	_, err = mesh(t, dir, "restart", "nsc-k2vx2k")
	require.NoError(t, err)
	waitConnected(t, run, "nsc-k2vx2k", 2)
	t.Logf("a client started after the agent was back connected in %v", time.Since(again).Round(time.Millisecond))

	// Every server presents a new SVID on a new handshake: it rotated without a restart. Twice,
	// so that every connection is refreshed through rotated SVIDs while the ping goes on: one
	// whose refresh failed would be closed when its tokens expire, losing pings.
	serials := map[string]map[string]bool{}
	for _, sock := range servers {
		cert, err := servedCertificate(sock)
		require.NoError(t, err)
		id, err := x509svid.IDFromCert(cert)
		require.NoError(t, err, "%s serves an X.509 SVID", sock)
		require.Equal(t, td, id.TrustDomain(), "%s serves an SVID of SPIRE's trust domain", sock)
		serials[sock] = map[string]bool{cert.SerialNumber.String(): true}
	}
	record = pingDuring(t, func() {
		require.Eventually(t, func() bool {
			done := true
			for sock, seen := range serials {
				if cert, err := servedCertificate(sock); err == nil {
					seen[cert.SerialNumber.String()] = true
				}
				done = done && len(seen) > 2
			}
			return done
		}, 4*svidTTL, 100*time.Millisecond, "every server rotated its SVID twice")
	})
	report, lost = lossReport(t, record)
	t.Logf("every server rotated its SVID twice under traffic: %s", report)
	require.Zero(t, lost, "the k2k vWire lost pings while the SVIDs rotated")
	_, err = mesh(t, dir, "restart", "nsc-k2k-eth")
	require.NoError(t, err)
	waitConnected(t, run, "nsc-k2k-eth", 2)
	require.True(t, pingOnce("vw-nsc-k2k-eth"), "a client started after the rotation has a vWire that carries ping")
	_, err = mesh(t, dir, "check")
	require.NoError(t, err, "every topology carries ping after the rotations")
	require.Equal(t, 1, strings.Count(readFile(t, filepath.Join(run, "nsc-k2k.log")), "msg=connected"),
		"the first client kept its vWire through the agent's restart, the rotations and the refreshes")
	for _, log := range logs {
		require.NotContains(t, readFile(t, log), "level=ERROR", "%s logged no error", log)
	}
}

// lossReport runs prober.sh's report on a record of ping -D (pingDuring) and returns it with the
// number of pings lost in all.
func lossReport(t *testing.T, record string) (string, int) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "ping.log")
	require.NoError(t, os.WriteFile(file, []byte(record), 0o600))
	out, err := exec.Command("../deployments-k8s/examples/prober.sh", "report", file).CombinedOutput()
	require.NoError(t, err, "prober.sh report: %s", out)
	m := regexp.MustCompile(`(\d+) lost in all`).FindSubmatch(out)
	require.NotNil(t, m, "prober.sh report printed %q", out)
	lost, err := strconv.Atoi(string(m[1]))
	require.NoError(t, err)
	return strings.TrimSpace(string(out)), lost
}

// waitConnected waits until the client's log says connected n times: a restarted client logs it
// again once its vWire is up.
func waitConnected(t *testing.T, run, client string, n int) {
	t.Helper()
	log := filepath.Join(run, client+".log")
	require.Eventually(t, func() bool { b, _ := os.ReadFile(log); return strings.Count(string(b), "msg=connected") >= n },
		time.Minute, 10*time.Millisecond, "%s connected (see %s)", client, log)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// servedCertificate returns the certificate a server presents on a new TLS handshake at its unix
// socket. The handshake goes no further: this test has no SVID to present.
func servedCertificate(socket string) (*x509.Certificate, error) {
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return nil, err
	}
	var served *x509.Certificate
	client := tls.Client(conn, &tls.Config{
		InsecureSkipVerify: true, // only looked at, never trusted
		NextProtos:         []string{"h2"},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no certificate")
			}
			var err error
			served, err = x509.ParseCertificate(raw[0])
			return err
		},
	})
	err = client.Handshake() // the server refuses a client without a certificate, after it showed its own
	if served == nil {
		return nil, fmt.Errorf("%s served no certificate: %w", socket, err)
	}
	return served, nil
}
