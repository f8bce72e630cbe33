package envconfig_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/networkservice/core/trace"
	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/telemetry/otlptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// config has a variable of every kind the package handles.
type config struct {
	envconfig.Common
	Name       envconfig.Name       `default:"nse" split_words:"true" desc:"the name"`
	Offers     envconfig.Names      `default:"icmp-responder" split_words:"true" desc:"network services"`
	ListenOn   envconfig.ListenURL  `default:"unix:///var/lib/networkservicemesh/x.sock" split_words:"true" desc:"where to serve"`
	ConnectTo  envconfig.URL        `default:"tcp://127.0.0.1:5001" split_words:"true" desc:"where to connect"`
	CIDRPrefix envconfig.Prefixes   `default:"169.254.0.0/16" split_words:"true" desc:"addresses to give"`
	Labels     envconfig.Labels     `split_words:"true" desc:"labels"`
	Timeout    time.Duration        `default:"15s" split_words:"true" alias:"NSM_WAIT,NSM_DEADLINE" desc:"how long to wait"`
	Services   []string             `required:"true" split_words:"true" alias:"NSM_SERVICE_NAMES" desc:"services to offer"`
	Register   bool                 `default:"true" split_words:"true" desc:"register or not"`
	Retries    uint8                `default:"3" split_words:"true" desc:"how many tries | at most"`
	Serve      envconfig.ListenURLs `default:"unix:///var/lib/networkservicemesh/y.sock,tcp://:5002" split_words:"true" desc:"where else to serve"`
	IdleTime   time.Duration        `default:"0" split_words:"true" desc:"how long to stay idle; 0 for ever"`
	envconfig.NotYet
	AgentSocket string `env:"SPIFFE_ENDPOINT_SOCKET" unused:"tokens are unsigned and connections plain, no SPIFFE identities yet" desc:"the SPIRE agent's Workload API socket, unix:///path"`
}

// setenv clears the NSM_* variables of the test's environment, then sets those of env
// (NAME=value; a NAME alone unsets it), and the required one unless env sets it.
func setenv(t *testing.T, env ...string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "NSM_") {
			t.Setenv(k, "") // restored after the test
			require.NoError(t, os.Unsetenv(k))
		}
	}
	t.Setenv("NSM_SERVICES", "icmp-responder")
	for _, kv := range env {
		k, v, set := strings.Cut(kv, "=")
		t.Setenv(k, v)
		if !set {
			require.NoError(t, os.Unsetenv(k))
		}
	}
}

func TestDefaults(t *testing.T) {
	setenv(t)
	var c config
	require.NoError(t, envconfig.Process(&c))
	require.Equal(t, envconfig.Level(slog.LevelInfo), c.LogLevel)
	require.Equal(t, envconfig.Name("nse"), c.Name)
	require.Equal(t, "unix:///var/lib/networkservicemesh/x.sock", c.ListenOn.String())
	require.Equal(t, "tcp://127.0.0.1:5001", c.ConnectTo.String())
	require.Equal(t, envconfig.Prefixes{netip.MustParsePrefix("169.254.0.0/16")}, c.CIDRPrefix)
	require.Nil(t, c.Labels, "a variable without a default that is not set stays zero")
	require.Equal(t, 15*time.Second, c.Timeout)
	require.Equal(t, []string{"icmp-responder"}, c.Services)
	require.True(t, c.Register)
}

func TestValuesSet(t *testing.T) {
	setenv(t,
		"NSM_LOG_LEVEL=trace",
		"NSM_LISTEN_ON=tcp://:5002",
		"NSM_CONNECT_TO=tcp://[fd00::2]:5001",
		"NSM_CIDR_PREFIX=10.0.0.0/24, fd00::/120",
		"NSM_LABELS=app=web,version:2",
		"NSM_TIMEOUT=1m30s",
		"NSM_SERVICES=a,b",
		"NSM_REGISTER=false",
		"NSM_NAME=nse-1",
		"NSM_OFFERS=a, vpn@corp.example",
	)
	var c config
	require.NoError(t, envconfig.Process(&c))
	require.Equal(t, envconfig.LevelTrace, c.LogLevel)
	require.Equal(t, "TRACE", c.LogLevel.String())
	require.Equal(t, ":5002", c.ListenOn.Host)
	require.Equal(t, "[fd00::2]:5001", c.ConnectTo.Host)
	require.Equal(t, envconfig.Prefixes{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00::/120")}, c.CIDRPrefix)
	require.Equal(t, envconfig.Labels{"app": "web", "version": "2"}, c.Labels)
	require.Equal(t, 90*time.Second, c.Timeout)
	require.Equal(t, []string{"a", "b"}, c.Services)
	require.False(t, c.Register)
	require.Equal(t, envconfig.Name("nse-1"), c.Name)
	require.Equal(t, envconfig.Names{"a", "vpn@corp.example"}, c.Offers)
}

func TestBadConfigurationNamesTheVariable(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want string // the whole message
	}{
		{"URL without scheme", []string{"NSM_LISTEN_ON=unix//x"},
			`NSM_LISTEN_ON: "unix//x": has no scheme; use unix:///path/to/socket or tcp://host:port`},
		{"relative unix path", []string{"NSM_CONNECT_TO=unix://x.sock"},
			`NSM_CONNECT_TO: "unix://x.sock": has host "x.sock"; a unix URL has three slashes: unix:///x.sock`},
		{"dial URL without host", []string{"NSM_CONNECT_TO=tcp://:5001"},
			`NSM_CONNECT_TO: "tcp://:5001": has no host; use tcp://host:port, e.g. tcp://127.0.0.1:5001 or tcp://[::1]:5001`},
		{"listen URL without port", []string{"NSM_LISTEN_ON=tcp://:"},
			`NSM_LISTEN_ON: "tcp://:": has no port; use tcp://host:port`},
		{"listen URL on port 0", []string{"NSM_LISTEN_ON=tcp://127.0.0.1:0"},
			`NSM_LISTEN_ON: "tcp://127.0.0.1:0": port "0" is not a port number 1-65535`},
		{"empty URL", []string{"NSM_CONNECT_TO="},
			`NSM_CONNECT_TO: "": empty; use unix:///path/to/socket or tcp://host:port`},
		{"unparsable URL", []string{"NSM_CONNECT_TO=tcp://[::1"},
			`NSM_CONNECT_TO: "tcp://[::1": not a URL (missing ']' in host); use unix:///path/to/socket or tcp://host:port`},
		{"bad CIDR", []string{"NSM_CIDR_PREFIX=10.0.0.0/33"},
			`NSM_CIDR_PREFIX: "10.0.0.0/33": not a CIDR; write address/length, e.g. 169.254.0.0/16 or fd00::/64`},
		{"bad second CIDR", []string{"NSM_CIDR_PREFIX=10.0.0.0/8,fd00::/129"},
			`NSM_CIDR_PREFIX: "10.0.0.0/8,fd00::/129": item 2 "fd00::/129": not a CIDR; write address/length, e.g. 169.254.0.0/16 or fd00::/64`},
		{"CIDR with host bits", []string{"NSM_CIDR_PREFIX=fd00::1/64"},
			`NSM_CIDR_PREFIX: "fd00::1/64": has host bits set; did you mean fd00::/64?`},
		{"overlapping CIDRs", []string{"NSM_CIDR_PREFIX=10.0.0.0/8,10.1.0.0/16"},
			`NSM_CIDR_PREFIX: "10.0.0.0/8,10.1.0.0/16": item 2 "10.1.0.0/16": overlaps 10.0.0.0/8`},
		{"NSM's CIDR groups", []string{"NSM_CIDR_PREFIX=[10.0.0.0/8],[fd00::/64]"},
			`NSM_CIDR_PREFIX: "[10.0.0.0/8],[fd00::/64]": item 1 "[10.0.0.0/8]": NSM's groups in [brackets] are not supported; list the CIDRs without brackets`},
		{"IPv4-mapped CIDR", []string{"NSM_CIDR_PREFIX=::ffff:10.0.0.0/104"},
			`NSM_CIDR_PREFIX: "::ffff:10.0.0.0/104": an IPv4-mapped IPv6 prefix; write it as IPv4`},
		{"no CIDR", []string{"NSM_CIDR_PREFIX= "},
			`NSM_CIDR_PREFIX: " ": no CIDR; give at least one, e.g. 169.254.0.0/16`},
		{"extra comma", []string{"NSM_CIDR_PREFIX=10.0.0.0/8,"},
			`NSM_CIDR_PREFIX: "10.0.0.0/8,": item 2 "": empty item; remove the extra comma`},
		{"label without value", []string{"NSM_LABELS=app"},
			`NSM_LABELS: "app": not key=value`},
		{"label with empty key", []string{"NSM_LABELS=a=1,=2"},
			`NSM_LABELS: "a=1,=2": item 2 "=2": has an empty key`},
		{"label twice", []string{"NSM_LABELS=a=1,a:2"},
			`NSM_LABELS: "a=1,a:2": item 2 "a:2": key "a" given twice`},
		{"bad duration", []string{"NSM_TIMEOUT=15"},
			`NSM_TIMEOUT: "15": not a duration; write a number with a unit: 500ms, 30s, 5m, 1h30m`},
		{"zero duration", []string{"NSM_TIMEOUT=0s"},
			`NSM_TIMEOUT: "0s": must be positive`},
		{"negative duration", []string{"NSM_TIMEOUT=-1s"},
			`NSM_TIMEOUT: "-1s": must be positive`},
		{"bad bool", []string{"NSM_REGISTER=yes please"},
			`NSM_REGISTER: "yes please": want true or false`},
		{"number out of range", []string{"NSM_RETRIES=300"},
			`NSM_RETRIES: "300": want a whole number (uint8)`},
		{"bad name", []string{"NSM_NAME=nse 1"},
			`NSM_NAME: "nse 1": name "nse 1" has ' ' at byte 3; use letters, digits and '-', '_', '.' inside`},
		{"empty name", []string{"NSM_NAME="},
			`NSM_NAME: "": empty name`},
		{"name twice", []string{"NSM_OFFERS=a,b,a"},
			`NSM_OFFERS: "a,b,a": item 3 "a": given twice`},
		{"no names", []string{"NSM_OFFERS="},
			`NSM_OFFERS: "": no name; give at least one`},
		{"bad level", []string{"NSM_LOG_LEVEL=LOUD"},
			`NSM_LOG_LEVEL: "LOUD": want one of TRACE, DEBUG, INFO, WARN, ERROR`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setenv(t, tc.env...)
			err := envconfig.Process(&config{})
			require.EqualError(t, err, tc.want)
			var cerr *envconfig.Error
			require.ErrorAs(t, err, &cerr)
			require.True(t, strings.HasPrefix(tc.want, cerr.Var+": "))
		})
	}
}

func TestRequiredVariableUnset(t *testing.T) {
	t.Setenv("NSM_SERVICES", "")
	require.NoError(t, os.Unsetenv("NSM_SERVICES"))
	var c struct {
		envconfig.Common
		Services []string `required:"true" split_words:"true" desc:"services to offer"`
	}
	err := envconfig.Process(&c)
	require.EqualError(t, err, "NSM_SERVICES: not set; it is required: services to offer")
}

func TestLevels(t *testing.T) {
	for in, want := range map[string]slog.Level{
		"TRACE": slog.LevelDebug - 4, "debug": slog.LevelDebug, "Info": slog.LevelInfo,
		"WARN": slog.LevelWarn, "warning": slog.LevelWarn, " ERROR ": slog.LevelError,
	} {
		var l envconfig.Level
		require.NoError(t, l.Decode(in), in)
		require.Equal(t, want, slog.Level(l), in)
	}
}

func TestSpecMustNotUseEnvconfigTags(t *testing.T) {
	var c struct {
		envconfig.Common
		Port int `envconfig:"PORT"` // would also read PORT
	}
	err := envconfig.Process(&c)
	require.ErrorContains(t, err, "NSM_PORT has an envconfig tag")
}

func TestUnknownVariables(t *testing.T) {
	got := envconfig.Unknown(&config{}, []string{"NSM_NAME=x", "NSM_CIDR_PREFX=10.0.0.0/8", "HOME=/root", "NSM_LOG_LEVEL=DEBUG", "NSM_WAIT=1s", "NSM_PPROF_ENABLED=true"})
	require.Equal(t, []string{"NSM_CIDR_PREFX"}, got)
}

func TestUsageAndMarkdown(t *testing.T) {
	var usage, md bytes.Buffer
	require.NoError(t, envconfig.Usage(&usage, &config{}))
	cmdtest.Golden(t, "testdata/usage.golden", usage.String())
	require.NoError(t, envconfig.Markdown(&md, &config{}))
	cmdtest.Golden(t, "testdata/markdown.golden", md.String())
}

func command(spec envconfig.Spec, run func(ctx context.Context) error) envconfig.Command {
	return envconfig.Command{Name: "cmd-test", About: "cmd-test tests.", Spec: spec, Run: run}
}

func TestExecute(t *testing.T) {
	t.Cleanup(func() { trace.Enable(false) })
	defaultLogger := slog.Default()
	t.Cleanup(func() { slog.SetDefault(defaultLogger) })

	failed := errors.New("register at unix:///x.sock: registry unreachable")
	for _, tc := range []struct {
		name     string
		args     []string
		env      []string
		run      error
		code     int
		stdout   []string
		stderr   string // the whole of stderr, when the command did not start
		logs     []string
		traceOn  bool
		notCalls bool
	}{
		{name: "help", args: []string{"--help"}, stdout: []string{"cmd-test tests.", "Usage: cmd-test [--help]", "NSM_CIDR_PREFIX"}, notCalls: true},
		{name: "short help", args: []string{"-h"}, stdout: []string{"NSM_LOG_LEVEL"}, notCalls: true},
		{name: "help with bad config", args: []string{"--help"}, env: []string{"NSM_TIMEOUT=x"}, stdout: []string{"NSM_TIMEOUT"}, notCalls: true},
		{name: "argument", args: []string{"serve"}, code: 1, notCalls: true,
			stderr: "cmd-test: unexpected argument \"serve\"; the command takes NSM_* environment variables only (see --help)\n"},
		{name: "bad config", env: []string{"NSM_LISTEN_ON=unix//x"}, code: 1, notCalls: true,
			stderr: "cmd-test: NSM_LISTEN_ON: \"unix//x\": has no scheme; use unix:///path/to/socket or tcp://host:port\n"},
		{name: "runs", logs: []string{"level=INFO msg=starting cmd=cmd-test", "NSM_CIDR_PREFIX=[169.254.0.0/16]", "msg=stopped"}},
		{name: "run fails", run: failed, code: 1, logs: []string{"cmd-test: " + failed.Error() + "\n"}},
		{name: "warns of unknown variables", env: []string{"NSM_NAEM=x"}, logs: []string{"level=WARN", "variable=NSM_NAEM"}},
		{name: "warns of variables accepted and not used", env: []string{"NSM_PPROF_ENABLED=true", "SPIFFE_ENDPOINT_SOCKET=unix:///run/spire/sockets/agent.sock"},
			logs: []string{`level=WARN msg="accepted, not used yet" cmd=cmd-test variable=NSM_PPROF_ENABLED why="no pprof server yet"`,
				`variable=SPIFFE_ENDPOINT_SOCKET why="tokens are unsigned`}},
		{name: "trace", env: []string{"NSM_LOG_LEVEL=TRACE"}, traceOn: true, logs: []string{"NSM_LOG_LEVEL=TRACE"}},
		{name: "error level hides info", env: []string{"NSM_LOG_LEVEL=ERROR"}, stderr: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setenv(t, tc.env...)
			trace.Enable(false)
			var stdout, stderr bytes.Buffer
			called, traced := false, false
			code := command(&config{}, func(ctx context.Context) error {
				called, traced = true, trace.Enabled()
				require.NotNil(t, log.FromContext(ctx))
				return tc.run
			}).Execute(context.Background(), tc.args, &stdout, &stderr)
			require.Equal(t, tc.code, code, stderr.String())
			require.Equal(t, !tc.notCalls, called)
			for _, s := range tc.stdout {
				require.Contains(t, stdout.String(), s)
			}
			if tc.stdout == nil {
				require.Empty(t, stdout.String())
			}
			if tc.logs == nil {
				require.Equal(t, tc.stderr, stderr.String())
			}
			for _, s := range tc.logs {
				require.Contains(t, stderr.String(), s)
			}
			require.Equal(t, tc.traceOn, traced, "chains built in Run are traced")
			require.False(t, trace.Enabled(), "tracing ends with Run")
		})
	}
}

func TestExecuteEndsRunWithContext(t *testing.T) {
	defaultLogger := slog.Default()
	t.Cleanup(func() { slog.SetDefault(defaultLogger) })
	setenv(t)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr bytes.Buffer
	code := command(&config{}, func(run context.Context) error {
		cancel() // as a signal would
		<-run.Done()
		return nil
	}).Execute(ctx, nil, &bytes.Buffer{}, &stderr)
	require.Zero(t, code)
}

// FuzzDecode: every value type answers any text with a value or an error, never a panic.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{"", "unix:///a/b.sock", "tcp://[::1]:5001", "tcp://:0", "10.0.0.0/8,fd00::/64",
		"a=b,c:d", ",,", "TRACE", "::ffff:1.2.3.4/120", "tcp://[fe80::1%25eth0]:1", "unix://%zz", "registry:5002", ":5002,tcp://fd00::1:5001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		values := []envconfig.Value{new(envconfig.Name), &envconfig.Names{}, &envconfig.URL{}, &envconfig.ListenURL{}, &envconfig.ListenURLs{}, &envconfig.Prefixes{}, &envconfig.PrefixGroups{}, &envconfig.Labels{}, new(envconfig.Level)}
		for _, v := range values {
			_ = v.Decode(s)
		}
	})
}

func TestAliases(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      []string
		timeout  time.Duration
		services []string
		err      string // the whole message, when Process fails
	}{
		{name: "primary", env: []string{"NSM_TIMEOUT=1s"}, timeout: time.Second},
		{name: "alias when the primary is unset", env: []string{"NSM_WAIT=2s"}, timeout: 2 * time.Second},
		{name: "second alias", env: []string{"NSM_DEADLINE=3s"}, timeout: 3 * time.Second},
		{name: "first alias before the second", env: []string{"NSM_WAIT=4s", "NSM_DEADLINE=4s"}, timeout: 4 * time.Second},
		{name: "both with one value", env: []string{"NSM_TIMEOUT=5s", "NSM_WAIT=5s"}, timeout: 5 * time.Second},
		{name: "none: the default", timeout: 15 * time.Second},
		{name: "conflict", env: []string{"NSM_TIMEOUT=1s", "NSM_WAIT=2s"},
			err: `NSM_TIMEOUT: "1s": NSM_WAIT="2s" is set too; both name one setting, so set only one of them`},
		{name: "conflict between aliases", env: []string{"NSM_WAIT=1s", "NSM_DEADLINE=1m"},
			err: `NSM_WAIT: "1s": NSM_DEADLINE="1m" is set too; both name one setting, so set only one of them`},
		{name: "a bad alias is named", env: []string{"NSM_WAIT=soon"},
			err: `NSM_WAIT: "soon": not a duration; write a number with a unit: 500ms, 30s, 5m, 1h30m`},
		{name: "a zero alias is named", env: []string{"NSM_DEADLINE=0s"},
			err: `NSM_DEADLINE: "0s": must be positive`},
		{name: "a required variable set by its alias", env: []string{"NSM_SERVICES", "NSM_SERVICE_NAMES=a,b"},
			timeout: 15 * time.Second, services: []string{"a", "b"}},
		{name: "a required variable set by neither", env: []string{"NSM_SERVICES"},
			err: "NSM_SERVICES: not set (nor NSM_SERVICE_NAMES); it is required: services to offer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setenv(t, tc.env...)
			var c config
			err := envconfig.Process(&c)
			if tc.err != "" {
				require.EqualError(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.timeout, c.Timeout)
			if tc.services == nil {
				tc.services = []string{"icmp-responder"}
			}
			require.Equal(t, tc.services, c.Services)
		})
	}
}

func TestNSMForms(t *testing.T) {
	setenv(t,
		"NSM_CONNECT_TO=registry:5002",
		"NSM_LISTEN_ON=:5003",
		"NSM_SERVE=unix:///var/lib/networkservicemesh/nsm.io.sock, tcp://fd00::5:5001,[::1]:5004",
		"NSM_LOG_LEVEL=fatal",
		"NSM_IDLE_TIME=0",
	)
	var c config
	require.NoError(t, envconfig.Process(&c))
	require.Equal(t, "tcp://registry:5002", c.ConnectTo.String())
	require.Equal(t, "tcp://:5003", c.ListenOn.String())
	require.Equal(t, "unix:///var/lib/networkservicemesh/nsm.io.sock,tcp://fd00::5:5001,tcp://[::1]:5004", c.Serve.String())
	require.Equal(t, "fd00::5", c.Serve[1].Hostname(), "an unbracketed IPv6 address (tcp://$(POD_IP):5001) ends before the port")
	require.Equal(t, envconfig.Level(slog.LevelError), c.LogLevel)
	require.Zero(t, c.IdleTime, "a duration whose default is 0 may be 0: off")

	setenv(t, "NSM_SERVE=tcp://:5002,tcp://:5002")
	require.EqualError(t, envconfig.Process(&config{}), `NSM_SERVE: "tcp://:5002,tcp://:5002": item 2 "tcp://:5002": given twice`)
	setenv(t, "NSM_CONNECT_TO=registry:http")
	require.EqualError(t, envconfig.Process(&config{}), `NSM_CONNECT_TO: "registry:http": scheme "registry" is not supported; use unix:///path/to/socket or tcp://host:port`)
	setenv(t, "NSM_IDLE_TIME=-1s")
	require.EqualError(t, envconfig.Process(&config{}), `NSM_IDLE_TIME: "-1s": must be positive`)
}

func TestNamesGivenTwiceAreTheCommandsMistake(t *testing.T) {
	var c struct {
		envconfig.Common
		Wait  time.Duration `split_words:"true" alias:"NSM_LOG_LEVEL"`
		Other string        `split_words:"true" alias:"nsm_lower"`
	}
	require.ErrorContains(t, envconfig.Process(&c), "NSM_WAIT: the name NSM_LOG_LEVEL is given twice")
	require.ErrorContains(t, envconfig.Usage(&bytes.Buffer{}, &c), "NSM_WAIT: the name NSM_LOG_LEVEL is given twice")
}

// FuzzAliases: a variable set under its name and an alias is read as the one value they give,
// or refused naming both when they differ; never a panic.
func FuzzAliases(f *testing.F) {
	f.Add("1s", "1s", true, true)
	f.Add("1s", "2s", true, true)
	f.Add("", "5m", false, true)
	f.Add("x", "", true, false)
	f.Fuzz(func(t *testing.T, primary, alias string, setPrimary, setAlias bool) {
		if strings.ContainsRune(primary+alias, 0) {
			t.Skip("the environment cannot hold a NUL")
		}
		alone := func(env ...string) (time.Duration, error) {
			setenv(t, env...)
			var c config
			err := envconfig.Process(&c)
			return c.Timeout, err
		}
		var env []string
		if setPrimary {
			env = append(env, "NSM_TIMEOUT="+primary)
		}
		if setAlias {
			env = append(env, "NSM_WAIT="+alias)
		}
		got, err := alone(env...)
		switch {
		case setPrimary && setAlias && primary != alias:
			require.ErrorContains(t, err, "NSM_TIMEOUT: ")
			require.ErrorContains(t, err, "NSM_WAIT=")
		case setPrimary:
			want, wantErr := alone("NSM_TIMEOUT=" + primary)
			require.Equal(t, wantErr == nil, err == nil)
			require.Equal(t, want, got)
		case setAlias:
			want, wantErr := alone("NSM_TIMEOUT=" + alias)
			require.Equal(t, want, got)
			if wantErr != nil {
				require.EqualError(t, err, strings.Replace(wantErr.Error(), "NSM_TIMEOUT", "NSM_WAIT", 1))
			}
		}
	})
}

// TestExecuteSetsTelemetryUp: with a collector set, Run's chains are traced and its spans reach
// the collector once the command stops; a collector or Prometheus address that is wrong stops
// the command with one line, before Run.
func TestExecuteSetsTelemetryUp(t *testing.T) {
	defaultLogger := slog.Default()
	t.Cleanup(func() { slog.SetDefault(defaultLogger) })
	collector := otlptest.Start(t)
	setenv(t, "NSM_OPEN_TELEMETRY_ENDPOINT="+collector.Endpoint())
	var stderr bytes.Buffer
	code := command(&config{}, func(ctx context.Context) error {
		require.True(t, trace.Enabled(), "chains built in Run are traced")
		_, span := otel.Tracer("test").Start(ctx, "run")
		span.End()
		return nil
	}).Execute(context.Background(), nil, io.Discard, &stderr)
	require.Equal(t, 0, code, stderr.String())
	require.False(t, trace.Enabled())
	require.Len(t, collector.Spans(), 1, "the span was sent when the command stopped")
	require.Equal(t, "cmd-test", collector.Spans()[0].Service)

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = taken.Close() })
	for _, tc := range []struct{ env, want string }{
		{"NSM_OPEN_TELEMETRY_ENDPOINT=collector", `cmd-test: NSM_OPEN_TELEMETRY_ENDPOINT: "collector": want host:port, as in otel-collector.observability.svc.cluster.local:4317: address collector: missing port in address` + "\n"},
		{"NSM_PROMETHEUS_LISTEN_ON=" + taken.Addr().String(), "cmd-test: telemetry: NSM_PROMETHEUS_LISTEN_ON=\"" + taken.Addr().String() + "\": listen tcp " + taken.Addr().String() + ": bind: address already in use; set another host:port, or PROMETHEUS=false\n"},
	} {
		setenv(t, tc.env, "PROMETHEUS=true")
		stderr.Reset()
		code := command(&config{}, func(context.Context) error { t.Fatal("Run ran"); return nil }).
			Execute(context.Background(), nil, io.Discard, &stderr)
		require.Equal(t, 1, code)
		require.Equal(t, tc.want, stderr.String())
	}
}

func TestPrefixGroups(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		value string
		want  envconfig.PrefixGroups
		err   string // the whole message, when Decode fails
	}{
		{value: "10.0.0.0/24,fd00::/120", want: envconfig.PrefixGroups{{p("10.0.0.0/24"), p("fd00::/120")}}},
		{value: "10.0.0.0/24,10.1.0.0/24", want: envconfig.PrefixGroups{{p("10.0.0.0/24"), p("10.1.0.0/24")}}},
		{value: "[10.0.0.0/24]", want: envconfig.PrefixGroups{{p("10.0.0.0/24")}}},
		{value: "[10.0.0.0/24,fd00::/120],[10.1.0.0/24]", want: envconfig.PrefixGroups{{p("10.0.0.0/24"), p("fd00::/120")}, {p("10.1.0.0/24")}}},
		{value: " [ 10.0.0.0/24 , fd00::/120 ] , 10.1.0.0/24 ,[10.2.0.0/24] ", want: envconfig.PrefixGroups{{p("10.0.0.0/24"), p("fd00::/120")}, {p("10.1.0.0/24")}, {p("10.2.0.0/24")}}},
		{value: "", err: "no CIDR; give at least one, e.g. 169.254.0.0/16"},
		{value: "10.0.0.1/24", err: "has host bits set; did you mean 10.0.0.0/24?"},
		{value: "[10.0.0.0/24],[10.1.0.1/24]", err: `group 2 "10.1.0.1/24": has host bits set; did you mean 10.1.0.0/24?`},
		{value: "[10.0.0.0/24,fd00::/129]", err: `group 1 "10.0.0.0/24,fd00::/129": item 2 "fd00::/129": not a CIDR; write address/length, e.g. 169.254.0.0/16 or fd00::/64`},
		{value: "[10.0.0.0/24,]", err: `group 1 "10.0.0.0/24,": item 2 "": empty item; remove the extra comma`},
		{value: "[10.0.0.0/24],[]", err: "group 2 is empty; give it a CIDR or remove it"},
		{value: "[10.0.0.0/24],[ ]", err: "group 2 is empty; give it a CIDR or remove it"},
		{value: "[10.0.0.0/24", err: "unbalanced brackets: '[' at byte 0 is not closed; groups do not nest"},
		{value: "[10.0.0.0/24,[10.1.0.0/24]]", err: "unbalanced brackets: '[' at byte 0 is not closed; groups do not nest"},
		{value: "10.0.0.0/24]", err: "unbalanced brackets: ']' at byte 11 closes no '['"},
		{value: "[10.0.0.0/24]]", err: "unbalanced brackets: ']' at byte 13 closes no '['"},
		{value: "[10.0.0.0/24],]", err: "unbalanced brackets: ']' at byte 14 closes no '['"},
		{value: "[10.0.0.0/24][10.1.0.0/24]", err: "'[' at byte 13 follows group 1; separate groups with a comma"},
		{value: "10.0.0.0/24[10.1.0.0/24]", err: "'[' at byte 11 follows group 1; separate groups with a comma"},
		{value: "[10.0.0.0/24],", err: "',' at byte 13 ends the value; remove it or add a group"},
		{value: "[10.0.0.0/24],,[10.1.0.0/24]", err: "',' at byte 14 after a comma; remove the extra comma"},
		{value: ",[10.0.0.0/24]", err: "',' at byte 0 before any group; remove it"},
		{value: "[10.0.0.0/16],[10.0.1.0/24]", err: "group 2: 10.0.1.0/24 overlaps 10.0.0.0/16 of group 1"},
		{value: "[10.0.0.0/16,10.0.1.0/24]", err: `group 1 "10.0.0.0/16,10.0.1.0/24": item 2 "10.0.1.0/24": overlaps 10.0.0.0/16`},
	} {
		t.Run(tc.value, func(t *testing.T) {
			var g envconfig.PrefixGroups
			err := g.Decode(tc.value)
			if tc.err != "" {
				require.EqualError(t, err, tc.err)
				require.Nil(t, g, "a bad value changes nothing")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, g)
		})
	}
}

// TestPrefixGroupsNameTheVariable: Process names the variable and its value before what is wrong.
func TestPrefixGroupsNameTheVariable(t *testing.T) {
	setenv(t, "NSM_GROUPS=[10.0.0.0/24],[10.0.0.0/25]")
	var c struct {
		config
		Groups envconfig.PrefixGroups `default:"169.254.0.0/16" split_words:"true" desc:"pools"`
	}
	require.EqualError(t, envconfig.Process(&c),
		`NSM_GROUPS: "[10.0.0.0/24],[10.0.0.0/25]": group 2: 10.0.0.0/25 overlaps 10.0.0.0/24 of group 1`)
	setenv(t, "NSM_GROUPS")
	require.NoError(t, envconfig.Process(&c))
	require.Equal(t, envconfig.PrefixGroups{{netip.MustParsePrefix("169.254.0.0/16")}}, c.Groups)
}

// FuzzPrefixGroups: any text gives groups or an error, never a panic; groups are never empty,
// their prefixes are masked and overlap nothing, written back in brackets they read the same,
// and a text without brackets reads as the one group Prefixes reads.
func FuzzPrefixGroups(f *testing.F) {
	for _, s := range []string{"10.0.0.0/24,fd00::/120", "[10.0.0.0/24,fd00::/120],[10.1.0.0/24]", "[a],b", "[[", "]]", "[],", " [10.0.0.0/8] , 11.0.0.0/8", "[10.0.0.1/8]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var g envconfig.PrefixGroups
		if err := g.Decode(s); err != nil {
			require.Nil(t, g)
			return
		}
		var all []netip.Prefix
		text := make([]string, len(g))
		for i, group := range g {
			require.NotEmpty(t, group)
			items := make([]string, len(group))
			for j, p := range group {
				require.Equal(t, p.Masked(), p)
				for _, o := range all {
					require.False(t, o.Overlaps(p), "%s overlaps %s", p, o)
				}
				all = append(all, p)
				items[j] = p.String()
			}
			text[i] = "[" + strings.Join(items, ",") + "]"
		}
		var again envconfig.PrefixGroups
		require.NoError(t, again.Decode(strings.Join(text, ",")))
		require.Equal(t, g, again)
		if !strings.ContainsAny(s, "[]") {
			var one envconfig.Prefixes
			require.NoError(t, one.Decode(s))
			require.Equal(t, envconfig.PrefixGroups{one}, g)
		}
	})
}
