// Package envconfig reads a vwire command's configuration from NSM_* environment variables, as
// NSM's commands do, and does what every command does at start: --help, a context cancelled on
// SIGINT and SIGTERM, a logger at NSM_LOG_LEVEL, and telemetry (traces and metrics, through
// sdk/pkg/tools/telemetry) as its Common variables ask (Command). Commands serve with
// sdk/pkg/tools/grpcserve.
//
// A command's configuration is a struct that embeds Common and tags each field for
// github.com/kelseyhightower/envconfig with split_words:"true" (the field ListenOn is the
// variable NSM_LISTEN_ON), default:"..." and desc:"..."; required:"true" marks a variable
// without a default that must be set. Fields are plain Go types (string, bool, integers,
// time.Duration, []string) or the types of this package, which check what they read: URL,
// ListenURL and ListenURLs (next-hop URLs, through sdk/pkg/tools/hopurl; a tcp one may be
// written host:port, as NSM's manifests do), Prefixes (CIDRs, through net/netip) and
// PrefixGroups (NSM's groups of them, [a,b],[c]), Name and Names (through
// vwire.dev/api/validate), Labels and Level; a command may add types of its own (Value), and
// DecodeList helps it name the bad item of a list.
//
// NSM's own commands name some settings differently, and read some that vwire has no use for
// yet; a command accepts both, so that NSM's manifests run with vwire's images unchanged but for
// the image names. Three more tags say how:
//   - alias:"NSM_OTHER,NSM_THIRD" gives a variable other names, read when the first is not set;
//   - env:"SPIFFE_ENDPOINT_SOCKET" names a variable outside NSM_*;
//   - unused:"why" marks a variable read only so that it is accepted: Usage says it is not used
//     yet and why, and Command logs a line at start when it is set. NotYet holds those that
//     every one of NSM's commands reads.
//
// Guarantees: Process checks every variable before a command starts, and a bad one is an
// *Error that names the variable as it was set (the alias, if that is what was set), its value
// and what is wrong, for example
//
//	NSM_LISTEN_ON: "unix//x": has no scheme; use unix:///path/to/socket or tcp://host:port
//
// A list names the item that is wrong. A variable set under two of its names with different
// values is an error naming both. A duration must be positive, unless its default is 0, which
// then means off. Usage lists every variable with its type, default and description, in the
// order of the struct, and each alias on a row of its own after it.
package envconfig

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/kelseyhightower/envconfig"

	"vwire.dev/sdk/pkg/tools/telemetry"
)

// Prefix starts every variable's name: NSM_.
const Prefix = "NSM"

// Common holds the variables every command reads; a command's configuration embeds it.
type Common struct {
	LogLevel Level `default:"INFO" split_words:"true" desc:"least severe log lines written: TRACE (DEBUG and a line per chain element), DEBUG, INFO, WARN, ERROR"`
	// Telemetry: traces and metrics over OTLP, metrics for Prometheus (Command sets them up).
	telemetry.Config
}

// NotYet holds the variables that every one of NSM's commands reads, for jobs vwire does not do
// yet: a command's configuration embeds it so that NSM's manifests, which set some of them, run
// unchanged. None is used; Command logs those that are set.
type NotYet struct {
	PprofEnabled  bool   `split_words:"true" unused:"no pprof server yet" desc:"serve Go's pprof"`
	PprofListenOn string `split_words:"true" unused:"no pprof server yet" desc:"where pprof serves, host:port"`
}

// Spec is a command's configuration: a struct embedding Common, given by pointer.
type Spec interface{ common() *Common }

func (c *Common) common() *Common { return c }

// Value is a configuration type of a command's own: it decodes the variable's text, returning
// what is wrong (Process adds the variable and its value), and names its type for Usage.
type Value interface {
	Decode(value string) error
	TypeName() string
}

// Error is bad configuration: which variable, its value, and what is wrong with it.
type Error struct {
	Var     string // NSM_LISTEN_ON
	Value   string // the value as set, or the default
	Unset   bool   // the variable is required and not set
	Problem string // what is wrong and how to fix it
}

func (e *Error) Error() string {
	if e.Unset {
		return fmt.Sprintf("%s: %s", e.Var, e.Problem)
	}
	return fmt.Sprintf("%s: %q: %s", e.Var, e.Value, e.Problem)
}

// variable is one variable of a spec, as envconfig sees it, with the names of our own tags.
type variable struct {
	Key   string // the name Usage lists first
	Field reflect.Value
	Tags  reflect.StructTag
	names []string // Key, then the aliases, in the order they are read
}

func (v variable) desc() string { return v.Tags.Get("desc") }

func (v variable) def() string { return v.Tags.Get("default") }

func (v variable) required() bool {
	b, _ := strconv.ParseBool(v.Tags.Get("required"))
	return b
}

// unused is why the command accepts v without using it; empty for a variable it uses.
func (v variable) unused() string { return v.Tags.Get("unused") }

// lookup returns the first of v's names that is set, and its value; when none is set, Key and
// the default.
func (v variable) lookup() (name, value string, set bool) {
	for _, n := range v.names {
		if s, ok := os.LookupEnv(n); ok {
			return n, s, true
		}
	}
	return v.Key, v.def(), false
}

// conflict is an *Error when v is set under two names with different values.
func (v variable) conflict() error {
	name, value, set := v.lookup()
	if !set {
		return nil
	}
	for _, other := range v.names {
		if s, ok := os.LookupEnv(other); ok && other != name && s != value {
			return &Error{Var: name, Value: value, Problem: fmt.Sprintf(
				"%s=%q is set too; both name one setting, so set only one of them", other, s)}
		}
	}
	return nil
}

// envName matches the names a tag may give a variable.
var envName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// vars returns the variables of spec, with the names envconfig and our tags give them:
// envconfig keeps its list unexported, and hands it only to a usage template. A name given twice
// is the command's mistake.
func vars(spec any) ([]variable, error) {
	var out []variable
	var bad error
	fail := func(format string, args ...any) {
		if bad == nil {
			bad = fmt.Errorf("envconfig: "+format, args...)
		}
	}
	collect := func(info any) string {
		r := reflect.ValueOf(info)
		v := variable{
			Key:   r.FieldByName("Key").String(),
			Field: r.FieldByName("Field").Interface().(reflect.Value),
			Tags:  r.FieldByName("Tags").Interface().(reflect.StructTag),
		}
		if v.Tags.Get("envconfig") != "" {
			// envconfig would also read the name without NSM_, from whatever the environment has.
			fail("%s has an envconfig tag; name fields for their variables and use split_words:\"true\", or env:\"NAME\"", v.Key)
		}
		if env := v.Tags.Get("env"); env != "" {
			v.Key = env
		}
		v.names = []string{v.Key}
		if aliases := v.Tags.Get("alias"); aliases != "" {
			v.names = append(v.names, strings.Split(aliases, ",")...)
		}
		out = append(out, v)
		return ""
	}
	tmpl := template.Must(template.New("vars").Funcs(template.FuncMap{"collect": collect}).
		Parse(`{{range .}}{{collect .}}{{end}}`))
	if err := envconfig.Usaget(Prefix, spec, io.Discard, tmpl); err != nil {
		return nil, fmt.Errorf("envconfig: %w", err)
	}
	seen := map[string]bool{}
	for _, v := range out {
		for _, n := range v.names {
			if !envName.MatchString(n) {
				fail("%s: %q is not a variable name; use upper case letters, digits and _", v.Key, n)
			}
			if seen[n] {
				fail("%s: the name %s is given twice", v.Key, n)
			}
			seen[n] = true
		}
	}
	return out, bad
}

// Process reads the variables into spec, a pointer to a configuration struct: each from the
// first of its names that is set, else its default. The first bad variable is returned as an
// *Error.
func Process(spec any) error {
	all, err := vars(spec)
	if err != nil {
		return err
	}
	for _, v := range all {
		if err := v.conflict(); err != nil {
			return err
		}
		if err := v.decode(); err != nil {
			return err
		}
		if d, ok := v.Field.Interface().(time.Duration); ok && d <= 0 {
			name, value, _ := v.lookup()
			if d < 0 || (value != "" && v.def() != "0") {
				return &Error{Var: name, Value: value, Problem: "must be positive"}
			}
		}
	}
	return nil
}

// decode reads v into its field with envconfig, under the name that is set: envconfig reads one
// name per field, so v's field is read alone, in a struct of one field named for it.
func (v variable) decode() error {
	name, _, set := v.lookup()
	tag := fmt.Sprintf("envconfig:%q", name)
	if !set {
		tag += fmt.Sprintf(" default:%q required:%q", v.def(), v.Tags.Get("required"))
	}
	one := reflect.New(reflect.StructOf([]reflect.StructField{
		{Name: "V", Type: v.Field.Type(), Tag: reflect.StructTag(tag)},
	}))
	if err := envconfig.Process("", one.Interface()); err != nil {
		return v.explain(err)
	}
	if set || v.def() != "" {
		v.Field.Set(one.Elem().Field(0))
	}
	return nil
}

// explain turns an error of envconfig.Process into an *Error.
func (v variable) explain(err error) error {
	var perr *envconfig.ParseError
	if errors.As(err, &perr) {
		return &Error{Var: perr.KeyName, Value: perr.Value, Problem: problem(perr)}
	}
	if v.required() { // envconfig says "required key NSM_X missing value"
		problem := "not set; it is required: " + v.desc()
		if len(v.names) > 1 {
			problem = fmt.Sprintf("not set (nor %s); it is required: %s", strings.Join(v.names[1:], ", "), v.desc())
		}
		return &Error{Var: v.Key, Unset: true, Problem: problem}
	}
	return fmt.Errorf("envconfig: %w", err)
}

// problem says what is wrong with a value envconfig could not convert.
func problem(perr *envconfig.ParseError) string {
	switch perr.TypeName {
	case "time.Duration":
		return "not a duration; write a number with a unit: 500ms, 30s, 5m, 1h30m"
	case "bool":
		return "want true or false"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "want a whole number (" + perr.TypeName + ")"
	}
	return perr.Err.Error()
}

// Unknown returns the NSM_* variables of environ (as os.Environ gives it) that spec does not
// read under any name: most likely misspelt.
func Unknown(spec any, environ []string) []string {
	all, err := vars(spec)
	if err != nil {
		return nil
	}
	known := map[string]bool{}
	for _, v := range all {
		for _, n := range v.names {
			known[n] = true
		}
	}
	var out []string
	for _, kv := range environ {
		key, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(key, Prefix+"_") && !known[key] {
			out = append(out, key)
		}
	}
	return out
}

// row is one line of the table of Usage and Markdown.
type row struct{ name, typ, def, desc string }

// rows is the table of spec's variables: each, then a row for each of its aliases.
func rows(spec any) ([]row, error) {
	all, err := vars(spec)
	if err != nil {
		return nil, err
	}
	var out []row
	for _, v := range all {
		desc := v.desc()
		if why := v.unused(); why != "" {
			desc = "accepted, not used yet: " + why + "; in NSM, " + desc
		}
		out = append(out, row{v.Key, typeName(v.Field), orDash(v), desc})
		for _, alias := range v.names[1:] {
			out = append(out, row{alias, "alias", "-", "another name of " + v.Key + ", read when that is not set"})
		}
	}
	return out, nil
}

// Usage writes a table of the variables of spec: name, type, default, description.
func Usage(w io.Writer, spec any) error {
	all, err := rows(spec)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tTYPE\tDEFAULT\tDESCRIPTION")
	for _, r := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.name, r.typ, r.def, r.desc)
	}
	return tw.Flush()
}

// Markdown writes the table of Usage as a Markdown table, for a command's README.
func Markdown(w io.Writer, spec any) error {
	all, err := rows(spec)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "| variable | type | default | description |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, r := range all {
		if r.def != "-" && r.def != "(required)" {
			r.def = "`" + r.def + "`"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s | %s |\n", r.name, r.typ, r.def, strings.ReplaceAll(r.desc, "|", `\|`))
	}
	return nil
}

// unusedSet returns the variables of spec that are set and that it accepts without using them
// (tag unused): the name each is set under, and why it is not used.
func unusedSet(spec any) [][2]string {
	all, _ := vars(spec)
	var out [][2]string
	for _, v := range all {
		if name, _, set := v.lookup(); set && v.unused() != "" {
			out = append(out, [2]string{name, v.unused()})
		}
	}
	return out
}

func orDash(v variable) string {
	switch {
	case v.def() != "":
		return v.def()
	case v.required():
		return "(required)"
	}
	return "-"
}

// typeName names a field's type for Usage.
func typeName(field reflect.Value) string {
	if field.CanAddr() {
		if v, ok := field.Addr().Interface().(Value); ok {
			return v.TypeName()
		}
	}
	t := field.Type()
	if t == reflect.TypeFor[time.Duration]() {
		return "duration"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Slice:
		return "list"
	case reflect.Map:
		return "key:value list"
	}
	return t.String()
}
