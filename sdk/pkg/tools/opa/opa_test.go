package opa_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/tools/opa"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	small = `package test.policies.small

deny contains sprintf("%d is too small", [input.n]) if input.n < 10
`
	odd = `package test.policies.odd

deny contains "odd" if input.n % 2 == 1

deny contains "not a number" if not is_number(input.n)
`
)

func input(v any) ast.Value { return ast.MustInterfaceToValue(v) }

func TestDeny(t *testing.T) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.WriteFile(filepath.Join(dir, "odd.rego"), []byte(odd), 0o600))

	p, err := opa.Compile("test.policies",
		opa.FS(fstest.MapFS{"small.rego": {Data: []byte(small)}}, "*.rego"),
		opa.Files(filepath.Join(dir, "*.rego"))[0])
	require.NoError(t, err)
	ctx := context.Background()
	for _, tc := range []struct {
		n    any
		want []string
	}{
		{12, []string{}},
		{3, []string{"policy odd: odd", "policy small: 3 is too small"}},
		{"x", []string{"policy odd: not a number"}},
	} {
		got, err := p.Deny(ctx, input(map[string]any{"n": tc.n}))
		require.NoError(t, err)
		require.Equal(t, tc.want, got, "%v", tc.n)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = p.Deny(cancelled, input(map[string]any{"n": 3}))
	require.ErrorIs(t, err, context.Canceled)
}

func TestBadPolicies(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		want string
	}{
		{"syntax", "package test.policies.x\ndeny contains", "policy bad.rego: 2 errors occurred:\nbad.rego:2: rego_parse_error"},
		{"outside the namespace", "package other.x\ndeny contains 1 if true", "policy bad.rego: package data.other.x is not test.policies.<policy name>"},
		{"nested too deep", "package test.policies.x.y\ndeny contains 1 if true", "is not test.policies.<policy name>"},
		{"no deny", "package test.policies.x\nallow if true", "policy bad.rego: no set rule deny"},
		{"deny is not a set", "package test.policies.x\ndeny := true", "no set rule deny"},
		{"does not compile", "package test.policies.x\ndeny contains y if true", "compile policies:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := opa.Compile("test.policies", opa.FS(fstest.MapFS{"bad.rego": {Data: []byte(tc.src)}}, "*.rego"))
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := opa.Compile("test.policies", opa.Files("/nonexistent/vw/*.rego")...)
	require.EqualError(t, err, `policy files "/nonexistent/vw/*.rego": none found`)
	_, err = opa.Compile("not a ref!")
	require.ErrorContains(t, err, `namespace "not a ref!"`)
}
