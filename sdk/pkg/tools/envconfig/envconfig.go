// Package envconfig reads a vwire command's configuration from NSM_* environment variables, as
// NSM's commands do, and does what every command does at start: --help, a context cancelled on
// SIGINT and SIGTERM, and a logger at NSM_LOG_LEVEL (Command). Commands serve with
// sdk/pkg/tools/grpcserve.
//
// A command's configuration is a struct that embeds Common and tags each field for
// github.com/kelseyhightower/envconfig with split_words:"true" (the field ListenOn is the
// variable NSM_LISTEN_ON), default:"..." and desc:"..."; required:"true" marks a variable
// without a default that must be set. Fields are plain Go types (string, bool, integers,
// time.Duration, []string) or the types of this package, which check what they read: URL and
// ListenURL (next-hop URLs, through sdk/pkg/tools/hopurl), Prefixes (CIDRs, through net/netip),
// Name and Names (through vwire.dev/api/validate), Labels and Level; a command may add types of
// its own (Value), and DecodeList helps it name the bad item of a list.
//
// Guarantees: Process checks every variable before a command starts, and a bad one is an
// *Error that names the variable, its value and what is wrong, for example
//
//	NSM_LISTEN_ON: "unix//x": has no scheme; use unix:///path/to/socket or tcp://host:port
//
// A list names the item that is wrong. A duration must be positive. Usage lists every variable
// with its type, default and description, in the order of the struct.
package envconfig

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Prefix starts every variable's name: NSM_.
const Prefix = "NSM"

// Common holds the variables every command reads; a command's configuration embeds it.
type Common struct {
	LogLevel Level `default:"INFO" split_words:"true" desc:"least severe log lines written: TRACE (DEBUG and a line per chain element), DEBUG, INFO, WARN, ERROR"`
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

// variable is one variable of a spec, as envconfig sees it.
type variable struct {
	Key   string
	Field reflect.Value
	Tags  reflect.StructTag
}

func (v variable) desc() string { return v.Tags.Get("desc") }

func (v variable) def() string { return v.Tags.Get("default") }

func (v variable) required() bool {
	b, _ := strconv.ParseBool(v.Tags.Get("required"))
	return b
}

// value is the text Process read for v: the variable's, else the default.
func (v variable) value() string {
	if s, ok := os.LookupEnv(v.Key); ok {
		return s
	}
	return v.def()
}

// vars returns the variables of spec, with the names envconfig gives them: envconfig keeps its
// list unexported, and hands it only to a usage template.
func vars(spec any) ([]variable, error) {
	var out []variable
	var bad error
	collect := func(info any) string {
		r := reflect.ValueOf(info)
		v := variable{
			Key:   r.FieldByName("Key").String(),
			Field: r.FieldByName("Field").Interface().(reflect.Value),
			Tags:  r.FieldByName("Tags").Interface().(reflect.StructTag),
		}
		if v.Tags.Get("envconfig") != "" && bad == nil {
			// envconfig would also read the name without NSM_, from whatever the environment has.
			bad = fmt.Errorf("envconfig: %s has an envconfig tag; name fields for their variables and use split_words:\"true\"", v.Key)
		}
		out = append(out, v)
		return ""
	}
	tmpl := template.Must(template.New("vars").Funcs(template.FuncMap{"collect": collect}).
		Parse(`{{range .}}{{collect .}}{{end}}`))
	if err := envconfig.Usaget(Prefix, spec, io.Discard, tmpl); err != nil {
		return nil, fmt.Errorf("envconfig: %w", err)
	}
	return out, bad
}

// Process reads the NSM_* variables into spec, a pointer to a configuration struct; a variable
// that is not set gets its default. The first bad variable is returned as an *Error.
func Process(spec any) error {
	all, err := vars(spec)
	if err != nil {
		return err
	}
	if err := envconfig.Process(Prefix, spec); err != nil {
		return explain(all, err)
	}
	for _, v := range all {
		if d, ok := v.Field.Interface().(time.Duration); ok && d <= 0 && v.value() != "" {
			return &Error{Var: v.Key, Value: v.value(), Problem: "must be positive"}
		}
	}
	return nil
}

// explain turns an error of envconfig.Process into an *Error.
func explain(all []variable, err error) error {
	var perr *envconfig.ParseError
	if errors.As(err, &perr) {
		return &Error{Var: perr.KeyName, Value: perr.Value, Problem: problem(perr)}
	}
	for _, v := range all { // envconfig says "required key NSM_X missing value"
		if v.required() && strings.Contains(err.Error(), " "+v.Key+" ") {
			return &Error{Var: v.Key, Unset: true, Problem: "not set; it is required: " + v.desc()}
		}
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
// read: most likely misspelt.
func Unknown(spec any, environ []string) []string {
	all, err := vars(spec)
	if err != nil {
		return nil
	}
	known := make(map[string]bool, len(all))
	for _, v := range all {
		known[v.Key] = true
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

// Usage writes a table of the variables of spec: name, type, default, description.
func Usage(w io.Writer, spec any) error {
	all, err := vars(spec)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tTYPE\tDEFAULT\tDESCRIPTION")
	for _, v := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Key, typeName(v.Field), orDash(v), v.desc())
	}
	return tw.Flush()
}

// Markdown writes the table of Usage as a Markdown table, for a command's README.
func Markdown(w io.Writer, spec any) error {
	all, err := vars(spec)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "| variable | type | default | description |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, v := range all {
		def := orDash(v)
		if v.def() != "" {
			def = "`" + def + "`"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s | %s |\n", v.Key, typeName(v.Field), def,
			strings.ReplaceAll(v.desc(), "|", `\|`))
	}
	return nil
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
