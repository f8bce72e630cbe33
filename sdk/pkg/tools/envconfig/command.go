package envconfig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"

	"vwire.dev/sdk/pkg/networkservice/core/trace"
	"vwire.dev/sdk/pkg/tools/hopurl"
	"vwire.dev/sdk/pkg/tools/log"
)

// Command is a program configured by NSM_* variables.
type Command struct {
	Name  string // the program's name: the first word of its error lines, "cmd" in its log lines
	About string // what it does, for --help: whole lines, no trailing newline
	Spec  Spec   // where the configuration goes, read before Run
	// Run is the program. It returns nil once ctx ends and it has cleaned up, or an error that
	// stops the program with exit code 1. Its ctx carries the logger (sdk/pkg/tools/log).
	Run func(ctx context.Context) error
}

// Main runs the command with the process's arguments and exits with Execute's code.
func (c Command) Main() {
	os.Exit(c.Execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// Execute runs the command and returns its exit code:
//   - 0 after writing the help to stdout, when args ask for it (-h, --help);
//   - 1 with one line on stderr, "<name>: <what is wrong>", for an argument (there are none),
//     bad configuration, or an error from Run;
//   - 0 when Run returns nil.
//
// Before Run, it makes the logger (a text handler on stderr at NSM_LOG_LEVEL, also slog's
// default), turns on chain tracing at TRACE, warns about NSM_* variables the command does not
// read, and logs the configuration; Run's context ends at SIGINT or SIGTERM, or with ctx.
func (c Command) Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	for _, arg := range args {
		if arg == "-h" || arg == "--help" || arg == "-help" {
			if err := c.Help(stdout); err != nil {
				fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
				return 1
			}
			return 0
		}
	}
	if len(args) > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q; the command takes NSM_* environment variables only (see --help)\n", c.Name, args[0])
		return 1
	}
	if err := Process(c.Spec); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return 1
	}

	// From here on SIGINT and SIGTERM end Run's context instead of the process.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	level := c.Spec.common().LogLevel
	trace.Enable(level <= LevelTrace)
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.Level(level)})).With("cmd", c.Name)
	slog.SetDefault(logger)
	for _, key := range Unknown(c.Spec, os.Environ()) {
		logger.Warn("ignoring a variable this command does not read; see --help", "variable", key)
	}
	logger.Info("starting", configAttrs(c.Spec)...)
	if err := c.Run(log.WithLogger(ctx, logger)); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return 1
	}
	logger.Info("stopped")
	return 0
}

// Help writes what the command does and the table of its variables.
func (c Command) Help(w io.Writer) error {
	fmt.Fprintf(w, "%s\n\nUsage: %s [--help]\n\nConfigured by these environment variables only:\n\n", c.About, c.Name)
	return Usage(w, c.Spec)
}

// configAttrs is the configuration as log attributes, one per variable.
func configAttrs(spec any) []any {
	all, _ := vars(spec)
	attrs := make([]any, 0, len(all))
	for _, v := range all {
		attrs = append(attrs, slog.Any(v.Key, fmt.Sprint(v.Field.Interface())))
	}
	return attrs
}

// Serve serves on u a gRPC server with the services register adds and the standard health
// service (grpc.health.v1, SERVING), until ctx ends: then health says NOT_SERVING and the
// server stops, closing every call. The returned channel gets the error that stopped serving, if
// any, and is closed when serving has ended.
func Serve(ctx context.Context, u *url.URL, register func(*grpc.Server), opts ...grpc.ServerOption) (<-chan error, error) {
	lis, err := hopurl.Listen(u)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer(opts...)
	register(srv)
	status := health.NewServer()
	grpc_health_v1.RegisterHealthServer(srv, status)
	stop := context.AfterFunc(ctx, func() {
		status.Shutdown()
		srv.Stop()
	})
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		defer stop()
		err := srv.Serve(lis)
		// Serve returned on its own (the listener failed): end the calls too.
		srv.Stop()
		// ErrServerStopped: ctx ended before Serve began; nothing failed.
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errs <- fmt.Errorf("serve on %s: %w", u, err)
		}
	}()
	return errs, nil
}
