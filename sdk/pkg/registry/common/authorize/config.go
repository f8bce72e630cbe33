package authorize

import (
	"strings"

	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

// RegistryPolicyConfig is a registry's settings for authorize, read from the environment under
// NSM's name: a command serving the Registry API embeds it.
type RegistryPolicyConfig struct {
	RegistryServerPolicies []string `split_words:"true" desc:"Rego policy files (or glob patterns) that judge registrations instead of the defaults (tokens, signed, path, owner)"`
}

// Options returns authorize's options for a registry of identity id: WithIdentity unless id is
// insecure, and the policies c names. A policy that does not load or compile is an error naming
// the variable.
func (c RegistryPolicyConfig) Options(id *spiffe.Identity) ([]Option, error) {
	var opts []Option
	if !id.Insecure() {
		opts = append(opts, WithIdentity(id.Source()))
	}
	if len(c.RegistryServerPolicies) > 0 {
		opts = append(opts, WithPolicies(c.RegistryServerPolicies...))
	}
	if err := Check(opts...); err != nil {
		return nil, &envconfig.Error{Var: "NSM_REGISTRY_SERVER_POLICIES", Value: strings.Join(c.RegistryServerPolicies, ","), Problem: err.Error()}
	}
	return opts, nil
}
