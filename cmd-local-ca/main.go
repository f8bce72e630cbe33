// Command cmd-local-ca is the certificate authority of a mesh without SPIRE (the local mesh of
// deployments-k8s/local, a trial on a few hosts): it makes a trust domain and writes SVID files
// for the mesh's components, which read them with NSM_IDENTITY_DIR.
//
// The CA's certificate and key live in NSM_CA_DIR: made at the first run, used again by every
// later one, so that components given SVIDs at different times trust each other. Run it again
// for the same components to rotate their SVIDs: the components read the new files within a
// second, without a restart.
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

type config struct {
	envconfig.Common
	CADir        string        `required:"true" split_words:"true" desc:"the folder of the CA's certificate and key (ca.pem, ca_key.pem), made at the first run"`
	TrustDomain  string        `default:"vwire.local" split_words:"true" desc:"the trust domain of a new CA (a CA already in NSM_CA_DIR keeps its own)"`
	SvidLifetime time.Duration `default:"24h" split_words:"true" desc:"how long the SVIDs it writes last"`
	Issue        issues        `required:"true" desc:"the SVIDs to write, comma-separated NAME=FOLDER: the SVID of spiffe://<trust domain>/NAME goes into FOLDER (svid.pem, svid_key.pem, bundle.pem)"`
}

// issues are the SVIDs to write.
type issues []issue

type issue struct {
	path string // the SPIFFE ID's path, without its leading slash
	dir  string
}

func (is *issues) Decode(value string) error {
	return envconfig.DecodeList(value, func(item string) error {
		name, dir, ok := strings.Cut(item, "=")
		if !ok || name == "" || dir == "" {
			return errors.New("not NAME=FOLDER")
		}
		if err := spiffeid.ValidatePath("/" + name); err != nil {
			return fmt.Errorf("%q is no SPIFFE ID path: %w", name, err)
		}
		*is = append(*is, issue{path: name, dir: dir})
		return nil
	})
}

func (is issues) TypeName() string { return "NAME=FOLDER list" }

const about = `cmd-local-ca: the certificate authority of a mesh without SPIRE. Writes an SVID of its
trust domain for each NAME=FOLDER of NSM_ISSUE, making the CA in NSM_CA_DIR at the first run.`

func main() { command(&config{}).Main() }

func command(c *config) envconfig.Command {
	return envconfig.Command{Name: "cmd-local-ca", About: about, Spec: c, Run: func(ctx context.Context) error {
		return run(ctx, c)
	}}
}

func run(ctx context.Context, c *config) error {
	ca, err := spiffe.LoadCA(c.CADir)
	if errors.Is(err, fs.ErrNotExist) {
		td, tdErr := spiffeid.TrustDomainFromString(c.TrustDomain)
		if tdErr != nil {
			return &envconfig.Error{Var: "NSM_TRUST_DOMAIN", Value: c.TrustDomain, Problem: tdErr.Error()}
		}
		if ca, err = spiffe.NewCA(td); err == nil {
			err = ca.SaveCA(c.CADir)
		}
		if err == nil {
			log.FromContext(ctx).Info("made a trust domain", "trust_domain", td.String(), "dir", c.CADir)
		}
	}
	if err != nil {
		return err
	}
	for _, is := range c.Issue {
		id, err := spiffeid.FromPath(ca.TrustDomain(), "/"+is.path)
		if err != nil {
			return err
		}
		if err := ca.WriteFiles(is.dir, id, c.SvidLifetime); err != nil {
			return err
		}
		log.FromContext(ctx).Info("wrote an SVID", "spiffe_id", id.String(), "dir", is.dir, "lifetime", c.SvidLifetime)
	}
	return nil
}
