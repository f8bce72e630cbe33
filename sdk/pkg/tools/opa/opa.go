// Package opa loads and runs authorization policies written in Rego with Open Policy Agent, the
// same way for every API that has them (the NetworkService API's and the registry's authorize).
//
// A policy is a Rego module in a package directly under a namespace the caller names
// (vwire.registry.owner is policy "owner" of namespace vwire.registry) that defines a set rule
// deny: each string in it is a reason to refuse. Compile loads the modules of the sources given,
// checks that each is such a policy, and compiles them together once; Deny evaluates them for
// one input and returns every reason, as "policy <name>: <reason>", sorted, so that a refusal
// names what refused it and reads the same each time. Bad policies are refused at Compile with
// the file and what is wrong, so that a component refuses a bad configuration at start.
package opa

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Source is a set of policy files.
type Source struct {
	fsys     fs.FS
	root     string // how fsys's names read in messages
	patterns []string
}

// Files returns the Rego files at paths, or glob patterns (filepath.Match), as sources.
func Files(paths ...string) []Source {
	sources := make([]Source, 0, len(paths))
	for _, p := range paths {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		sources = append(sources, Source{fsys: os.DirFS("/"), root: "/", patterns: []string{strings.TrimPrefix(p, "/")}})
	}
	return sources
}

// FS returns the Rego files of fsys matching patterns (fs.Glob) as a source.
func FS(fsys fs.FS, patterns ...string) Source { return Source{fsys: fsys, patterns: patterns} }

// Policies are compiled policies, safe for concurrent use.
type Policies struct {
	query rego.PreparedEvalQuery
}

// Compile loads the policies of sources in namespace (such as "vwire.registry") and compiles
// them; errors name the file and the fault.
func Compile(namespace string, sources ...Source) (*Policies, error) {
	ns, err := ast.ParseRef("data." + namespace)
	if err != nil {
		return nil, fmt.Errorf("namespace %q: %w", namespace, err)
	}
	args := []func(*rego.Rego){rego.Query(fmt.Sprintf("data.%s[policy].deny[reason]", namespace))}
	for _, src := range sources {
		for _, pattern := range src.patterns {
			mods, err := load(ns, src.fsys, src.root, pattern)
			if err != nil {
				return nil, err
			}
			for _, m := range mods {
				args = append(args, rego.ParsedModule(m))
			}
		}
	}
	q, err := rego.New(args...).PrepareForEval(context.Background())
	if err != nil {
		return nil, fmt.Errorf("compile policies: %w", err)
	}
	return &Policies{query: q}, nil
}

// load parses the policy files matching pattern and checks that each is a policy of ns.
func load(ns ast.Ref, fsys fs.FS, root, pattern string) ([]*ast.Module, error) {
	names, err := fs.Glob(fsys, pattern)
	if err != nil || len(names) == 0 {
		return nil, fmt.Errorf("policy files %q: none found", root+pattern)
	}
	mods := make([]*ast.Module, 0, len(names))
	for _, file := range names {
		name := root + file
		src, err := fs.ReadFile(fsys, file)
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", name, err)
		}
		m, err := ast.ParseModuleWithOpts(name, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", name, err)
		}
		if pkg := m.Package.Path; len(pkg) != len(ns)+1 || !pkg.HasPrefix(ns) {
			return nil, fmt.Errorf("policy %s: package %v is not %s.<policy name>", name, pkg, strings.TrimPrefix(ns.String(), "data."))
		}
		if !slices.ContainsFunc(m.Rules, isDeny) {
			return nil, fmt.Errorf("policy %s: no set rule deny (deny contains reason if {...})", name)
		}
		mods = append(mods, m)
	}
	return mods, nil
}

func isDeny(r *ast.Rule) bool {
	return r.Head.Ref().String() == "deny" && r.Head.RuleKind() == ast.MultiValue
}

// Deny returns the reasons the policies give to refuse input, "policy <name>: <reason>" each,
// sorted; none if they allow it. It returns ctx's error when ctx ends first.
func (p *Policies) Deny(ctx context.Context, input ast.Value) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // AfterFunc below would cancel the evaluation only once it runs
	}
	// OPA would start a goroutine per evaluation to watch ctx; a callback costs nothing until
	// ctx ends.
	cancel := topdown.NewCancel()
	defer context.AfterFunc(ctx, cancel.Cancel)()
	results, err := p.query.Eval(ctx, rego.EvalParsedInput(input), rego.EvalExternalCancel(cancel))
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, fmt.Errorf("evaluating the policies failed: %w", err)
	}
	reasons := make([]string, 0, len(results))
	for _, r := range results {
		reasons = append(reasons, fmt.Sprintf("policy %v: %v", r.Bindings["policy"], r.Bindings["reason"]))
	}
	slices.Sort(reasons)
	return reasons, nil
}
