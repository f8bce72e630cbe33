// Command vwctl shows what a node's Network Service Manager knows, for an operator: its
// connections, one connection's path hop by hop with the hop where it broke, the registry's
// services and endpoints, and whether traffic crosses each vWire of the node.
//
//	vwctl connections           every connection the nsmgr knows
//	vwctl path ID               the connection's path, each hop's view, the first broken hop
//	vwctl services | endpoints  the registry's records (Find, no watch)
//	vwctl check                 ping across every vWire whose client is on the node (root)
//
// It reaches the nsmgr at -nsmgr (VWCTL_NSMGR) and the registry at -registry (VWCTL_REGISTRY,
// default: the nsmgr's registry service); the defaults are those of the local mesh
// (deployments-k8s/local/mesh.sh, under VWIRE_DEMO_DIR). Its identity comes from the variables
// every vwire component reads (SPIFFE_ENDPOINT_SOCKET, NSM_IDENTITY_DIR or NSM_INSECURE=true);
// with none set it takes the local mesh's vwctl identity, $VWIRE_DEMO_DIR/id/vwctl, when that
// exists. To see every connection, that identity must be among the nsmgr's and forwarders'
// NSM_MONITOR_OPERATORS. On Kubernetes, kubectl-vwire (./kubectl-vwire) runs it in the node's
// nsmgr pod. Exit codes: 0, 1 for an error, a broken path or a failed check, 2 for bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk-kernel/pkg/kernel/ping"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/explain"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/spiffe"

	"vwire.dev/cmd-vwctl/internal/check"
	"vwire.dev/cmd-vwctl/internal/inspect"
	"vwire.dev/cmd-vwctl/internal/render"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `vwctl: what a node's Network Service Manager knows.

usage: vwctl [flags] COMMAND [ARG]

commands:
  connections   every connection the nsmgr knows: client, service, endpoint, mechanism,
                interface, addresses, state, when its hop's token expires
  path ID       the connection's path (ID as connections lists it, or any hop's segment ID),
                each hop's own view, and the first hop that is unreachable, does not hold the
                connection, or holds it DOWN; exit code 1 when there is one
  services      the registry's network services
  endpoints     the registry's endpoints (with the nsmgr as registry: its node's forwarders too)
  check         as root on the node: ping each endpoint address from each local client's
                network namespace across its vWire; exit code 1 when one fails

identity (as every vwire component; exactly one): SPIFFE_ENDPOINT_SOCKET (a SPIRE agent),
NSM_IDENTITY_DIR (SVID files), NSM_INSECURE=true; with none, $VWIRE_DEMO_DIR/id/vwctl if it
exists (the local mesh's). The nsmgrs and forwarders show every connection only to the SPIFFE
IDs in their NSM_MONITOR_OPERATORS. NSM_LOG_LEVEL (default WARN) sets what vwctl logs to stderr.

flags (each also read from the variable named):
`

// config is what the flags and variables say.
type config struct {
	nsmgr    string
	registry string
	output   string
	timeout  time.Duration
}

// run is vwctl with its arguments and environment; it returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	demo := getenv("VWIRE_DEMO_DIR")
	if demo == "" {
		demo = "/tmp/vwire-demo"
	}
	c := config{nsmgr: "unix://" + filepath.Join(demo, "run", "nsmgr1.sock"), output: string(render.Table), timeout: 10 * time.Second}
	fs := flag.NewFlagSet("vwctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	str := func(p *string, name, env, help string) {
		if v := getenv(env); v != "" {
			*p = v
		}
		fs.StringVar(p, name, *p, help+" ($"+env+")")
	}
	str(&c.nsmgr, "nsmgr", "VWCTL_NSMGR", "the node's nsmgr, unix:///path or tcp://host:port (its NSM_LISTEN_ON)")
	str(&c.registry, "registry", "VWCTL_REGISTRY", "the registry for services and endpoints (default: the nsmgr's registry service)")
	str(&c.output, "o", "VWCTL_OUTPUT", "output: table or json")
	fs.DurationVar(&c.timeout, "timeout", c.timeout, "how long the whole command may take")

	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(stdout) // asked for, the usage is the output
		}
	}
	// Flags may come before, between and after the command and its argument.
	var words []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		words, rest = append(words, fs.Arg(0)), fs.Args()[1:]
	}
	if len(words) == 0 {
		fmt.Fprintln(stderr, "vwctl: no command; use connections, path ID, services, endpoints or check (vwctl -h)")
		return 2
	}
	cmd, cmdArgs := words[0], words[1:]
	format, err := render.ParseFormat(c.output)
	if err != nil {
		fmt.Fprintf(stderr, "vwctl: %v\n", err)
		return 2
	}
	want := map[string]int{"connections": 0, "path": 1, "services": 0, "endpoints": 0, "check": 0}
	n, ok := want[cmd]
	switch {
	case !ok:
		fmt.Fprintf(stderr, "vwctl: unknown command %q; use connections, path ID, services, endpoints or check (vwctl -h)\n", cmd)
		return 2
	case len(cmdArgs) != n && cmd == "path":
		fmt.Fprintln(stderr, "vwctl: path takes one connection ID (vwctl connections lists them)")
		return 2
	case len(cmdArgs) != n:
		fmt.Fprintf(stderr, "vwctl: %s takes no argument, got %q\n", cmd, cmdArgs)
		return 2
	}
	nsmgr, err := parseURL(c.nsmgr, "-nsmgr", "VWCTL_NSMGR")
	if err != nil {
		fmt.Fprintf(stderr, "vwctl: %v\n", err)
		return 2
	}
	var reg *url.URL
	if c.registry != "" {
		if reg, err = parseURL(c.registry, "-registry", "VWCTL_REGISTRY"); err != nil {
			fmt.Fprintf(stderr, "vwctl: %v\n", err)
			return 2
		}
	}

	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// Warnings by default: the identity's "loaded" line is not for an operator's terminal.
	level := envconfig.Level(slog.LevelWarn)
	if v := getenv("NSM_LOG_LEVEL"); v != "" {
		if err := level.Decode(v); err != nil {
			fmt.Fprintf(stderr, "vwctl: NSM_LOG_LEVEL=%s: %v\n", v, err)
			return 2
		}
	}
	ctx = log.WithLogger(ctx, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.Level(level)})))
	dialOpts, closeID, err := identity(ctx, getenv, demo)
	if err != nil {
		fmt.Fprintf(stderr, "vwctl: identity: %v (on the local mesh: %s, which mesh.sh writes)\n", err, filepath.Join(demo, "id", "vwctl"))
		return 1
	}
	defer closeID()
	in := inspect.New(nsmgr, reg, dialOpts...)
	defer in.Close()

	code, err := execute(ctx, in, cmd, cmdArgs, format, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "vwctl: %s\n", hint(err))
		return 1
	}
	return code
}

// execute runs one command against in and returns its exit code.
func execute(ctx context.Context, in *inspect.Inspector, cmd string, args []string, f render.Format, w io.Writer) (int, error) {
	now := time.Now()
	switch cmd {
	case "connections":
		conns, err := in.Connections(ctx)
		if err != nil {
			return 1, err
		}
		return 0, render.Connections(w, f, conns, now)
	case "path":
		p, err := in.PathOf(ctx, args[0])
		if err != nil {
			return 1, err
		}
		if err := render.Path(w, f, p); err != nil {
			return 1, err
		}
		if p.Broken >= 0 {
			return 1, nil
		}
		return 0, nil
	case "services":
		nss, err := in.Services(ctx)
		if err != nil {
			return 1, err
		}
		return 0, render.Services(w, f, nss)
	case "endpoints":
		nses, err := in.Endpoints(ctx)
		if err != nil {
			return 1, err
		}
		return 0, render.Endpoints(w, f, nses, now)
	default: // check
		conns, err := in.Connections(ctx)
		if err != nil {
			return 1, err
		}
		results := check.Run(conns, check.Namespaces("/proc", "/run/netns"), ping.Ping)
		if err := render.Checks(w, f, results); err != nil {
			return 1, err
		}
		for _, r := range results {
			if r.Error != "" {
				return 1, nil
			}
		}
		return 0, nil
	}
}

// parseURL reads a hop URL given by flag or variable.
func parseURL(s, flagName, env string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "unix" && u.Scheme != "tcp") {
		return nil, fmt.Errorf("%s (%s) %q is not a hop URL; use unix:///path/to/socket or tcp://host:port", flagName, env, s)
	}
	return u, nil
}

// identity returns the dial options of vwctl's identity (transport credentials and the
// registry's tokens) and what releases it.
func identity(ctx context.Context, getenv func(string) string, demo string) ([]grpc.DialOption, func(), error) {
	cfg := spiffe.Config{
		SpiffeEndpointSocket: getenv("SPIFFE_ENDPOINT_SOCKET"),
		IdentityDir:          getenv("NSM_IDENTITY_DIR"),
		Insecure:             getenv("NSM_INSECURE") == "true",
	}
	if cfg.SpiffeEndpointSocket == "" && cfg.IdentityDir == "" && !cfg.Insecure {
		if dir := filepath.Join(demo, "id", "vwctl"); exists(dir) {
			cfg.IdentityDir = dir
		}
	}
	id, err := cfg.Load(ctx)
	if err != nil {
		return nil, nil, err
	}
	tokens, err := id.Tokens("vwctl", time.Minute)
	if err != nil {
		_ = id.Close()
		return nil, nil, err
	}
	return append(id.DialOptions(), regclient.WithTokens(tokens)), func() { _ = id.Close() }, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// hint adds to err what to change when the nsmgr or registry could not be asked.
func hint(err error) string {
	var u *inspect.UnreachableError
	if !errors.As(err, &u) {
		return err.Error()
	}
	flagName, env := "-nsmgr", "VWCTL_NSMGR"
	if u.What == "registry" {
		flagName, env = "-registry", "VWCTL_REGISTRY"
	}
	switch {
	case explain.NoAnswer(u.Err):
		if strings.Contains(err.Error(), "handshake") {
			return fmt.Sprintf("%v\n  the TLS handshake failed: vwctl's identity (SPIFFE_ENDPOINT_SOCKET, NSM_IDENTITY_DIR) must be of the mesh's trust domain, and NSM_INSECURE=true only reaches an insecure mesh", err)
		}
		return fmt.Sprintf("%v\n  the %s cannot be reached: set %s or %s to its URL (the nsmgr's NSM_LISTEN_ON), or check that it runs", err, u.What, flagName, env)
	case status.Code(u.Err) == codes.PermissionDenied, status.Code(u.Err) == codes.Unauthenticated:
		return fmt.Sprintf("%v\n  the %s refused vwctl's identity: give vwctl an SVID of the mesh (NSM_IDENTITY_DIR, SPIFFE_ENDPOINT_SOCKET)", err, u.What)
	}
	return err.Error()
}
