package main

import (
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

var bin string // the command, built once

func TestMain(m *testing.M) {
	cmdtest.Main(m, map[string]*string{".": &bin})
}

func TestHelpAndREADMEListEveryVariable(t *testing.T) {
	cmdtest.CheckDocs(t, bin, &config{})
}

func TestBadConfigurationStopsWithOneLine(t *testing.T) {
	dir := cmdtest.TempDir(t)
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"no CA folder", []string{"NSM_ISSUE=nsmgr=" + dir}, "NSM_CA_DIR: not set; it is required"},
		{"nothing to issue", []string{"NSM_CA_DIR=" + dir}, "NSM_ISSUE: not set; it is required"},
		{"not NAME=FOLDER", []string{"NSM_CA_DIR=" + dir, "NSM_ISSUE=nsmgr"}, `NSM_ISSUE: "nsmgr": not NAME=FOLDER`},
		{"a bad name", []string{"NSM_CA_DIR=" + dir, "NSM_ISSUE=a//b=" + dir}, "is no SPIFFE ID path"},
		{"a bad trust domain", []string{"NSM_CA_DIR=" + filepath.Join(dir, "new"), "NSM_TRUST_DOMAIN=Not A Domain", "NSM_ISSUE=nsmgr=" + dir}, `NSM_TRUST_DOMAIN: "Not A Domain"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line, _ := cmdtest.Fails(t, bin, append(tc.env, "NSM_LOG_LEVEL=ERROR"))
			require.Contains(t, line, tc.want)
		})
	}
}

func TestIssuesAndRotates(t *testing.T) {
	dir := cmdtest.TempDir(t)
	caDir, nsmgrDir, nscDir := filepath.Join(dir, "ca"), filepath.Join(dir, "nsmgr"), filepath.Join(dir, "nsc")
	env := []string{"NSM_CA_DIR=" + caDir, "NSM_TRUST_DOMAIN=mesh.test", "NSM_ISSUE=node-1/nsmgr=" + nsmgrDir + ",nsc=" + nscDir}
	code, _, stderr := cmdtest.Run(t, bin, env)
	require.Zero(t, code, stderr)

	ca, err := spiffe.LoadCA(caDir)
	require.NoError(t, err)
	svid := func(dir string) *x509svid.SVID {
		src, err := spiffe.Files(dir)
		require.NoError(t, err)
		s, err := src.GetX509SVID()
		require.NoError(t, err)
		id, _, err := x509svid.Verify(s.Certificates, ca.Bundle())
		require.NoError(t, err, "the SVID chains to the CA kept in NSM_CA_DIR")
		require.Equal(t, s.ID, id)
		return s
	}
	first := svid(nsmgrDir)
	require.Equal(t, spiffeid.RequireFromString("spiffe://mesh.test/node-1/nsmgr"), first.ID)
	require.Equal(t, spiffeid.RequireFromString("spiffe://mesh.test/nsc"), svid(nscDir).ID)

	// Again, even with another trust domain asked: the CA in NSM_CA_DIR is kept, the SVIDs renewed.
	env[1] = "NSM_TRUST_DOMAIN=other.test"
	code, _, stderr = cmdtest.Run(t, bin, env)
	require.Zero(t, code, stderr)
	again := svid(nsmgrDir)
	require.Equal(t, first.ID, again.ID)
	require.False(t, first.Certificates[0].Equal(again.Certificates[0]), "a new SVID")
}
