package envconfig

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"vwire.dev/sdk/pkg/networkservice/core/trace"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/telemetry"
)

// shutdownTimeout bounds the export of the last spans and metrics when a command stops: a
// collector that is gone must not hold the program's exit.
const shutdownTimeout = 5 * time.Second

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
// default), sets telemetry up (sdk/pkg/tools/telemetry: OTLP export, the Prometheus endpoint;
// a failure there is bad configuration), wraps the elements of chains built from then on in
// spans when traces are exported and in change lines at TRACE (sdk/pkg/networkservice/core/trace),
// warns about NSM_* variables the command does not read and about those it accepts without
// using them yet, and logs the configuration; Run's context ends at SIGINT or SIGTERM, or with
// ctx. After Run, it flushes telemetry (within shutdownTimeout) and stops its endpoint.
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

	common := c.Spec.common()
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.Level(common.LogLevel)})).With("cmd", c.Name)
	slog.SetDefault(logger)
	tel, err := telemetry.Setup(ctx, c.Name, common.Config)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return 1
	}
	defer func() {
		// The context may be over (SIGTERM): the last spans get a deadline of their own.
		flush, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		if err := tel.Shutdown(flush); err != nil {
			logger.Warn("telemetry not flushed", "error", err)
		}
	}()
	trace.Configure(telemetry.Tracing(), common.LogLevel <= LevelTrace)
	defer trace.Configure(false, false)
	for _, key := range Unknown(c.Spec, os.Environ()) {
		logger.Warn("ignoring a variable this command does not read; see --help", "variable", key)
	}
	for _, u := range unusedSet(c.Spec) {
		logger.Warn("accepted, not used yet", "variable", u[0], "why", u[1])
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

// configAttrs is the configuration as log attributes, one per variable it uses.
func configAttrs(spec any) []any {
	all, _ := vars(spec)
	attrs := make([]any, 0, len(all))
	for _, v := range all {
		if v.unused() == "" {
			attrs = append(attrs, slog.Any(v.Key, fmt.Sprint(v.Field.Interface())))
		}
	}
	return attrs
}
