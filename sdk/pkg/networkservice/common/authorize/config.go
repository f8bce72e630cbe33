package authorize

import (
	"strings"

	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

// PolicyConfig is a command's settings for authorize, read from the environment: a command serving
// the Network Service API embeds it.
type PolicyConfig struct {
	NetworkServiceServerPolicies []string `split_words:"true" desc:"Rego policy files (or glob patterns) that judge each Request instead of the defaults (tokens, path, and with an identity signed, chained, owner); a vwire variable: NSM reads fixed paths"`
}

// Options returns authorize's options for a command of identity id: WithIdentity unless id is
// insecure, and the policies c names. A policy that does not load or compile is an error naming
// the variable.
func (c PolicyConfig) Options(id *spiffe.Identity) ([]Option, error) {
	var opts []Option
	if !id.Insecure() {
		opts = append(opts, WithIdentity(id.Source()))
	}
	if len(c.NetworkServiceServerPolicies) > 0 {
		opts = append(opts, WithPolicies(c.NetworkServiceServerPolicies...))
	}
	if err := Check(opts...); err != nil {
		return nil, &envconfig.Error{Var: "NSM_NETWORK_SERVICE_SERVER_POLICIES", Value: strings.Join(c.NetworkServiceServerPolicies, ","), Problem: err.Error()}
	}
	return opts, nil
}
