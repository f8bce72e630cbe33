// Command cmd-registry-memory is a Network Service Mesh registry that keeps network services and
// endpoints in memory: endpoints register there and refresh their registration, nsmgrs find
// endpoints there. An endpoint that stops refreshing is unregistered when its registration
// expires, and watchers are told.
//
// It serves NSM's two registry services (NetworkServiceRegistry, NetworkServiceEndpointRegistry)
// of sdk/pkg/registry/chains/registryserver and the gRPC health service on each URL of
// NSM_LISTEN_ON, until SIGINT or SIGTERM. What it stores is lost
// when it stops: endpoints register again at their next refresh.
package main

import (
	"context"
	"time"

	"vwire.dev/sdk/pkg/registry/chains/registryserver"
	regauthorize "vwire.dev/sdk/pkg/registry/common/authorize"
	"vwire.dev/sdk/pkg/registry/common/expire"
	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

type config struct {
	envconfig.Common
	spiffe.Config
	regauthorize.RegistryPolicyConfig
	Name         envconfig.Name       `default:"registry" split_words:"true" desc:"the registry's id in the path_ids of what registers through it"`
	ListenOn     envconfig.ListenURLs `default:"unix:///var/lib/networkservicemesh/registry.sock" split_words:"true" desc:"where to serve, one URL or several: unix:///path/to/socket, tcp://host:port (tcp://:5002 for every address)"`
	ExpirePeriod time.Duration        `default:"1m" split_words:"true" desc:"lifetime of an endpoint registration that asks for none; an endpoint that does not register again within it is unregistered"`

	MaxTokenLifetime       time.Duration `split_words:"true" unused:"this registry signs nothing: it passes no registration on" desc:"lifetime of the tokens it signs"`
	RegistryClientPolicies string        `split_words:"true" unused:"no client-side policies: a component trusts the answers of the registry it reached over mutual TLS" desc:"OPA policy files (.rego) and directories that check the answers of registries it asks"`
	ProxyRegistryURL       envconfig.URL `split_words:"true" unused:"no interdomain registry yet" desc:"the registry proxy that answers for other domains (name@domain)"`
	envconfig.NotYet
}

const about = `cmd-registry-memory: a Network Service Mesh registry that keeps network services and
endpoints in memory. Endpoints register and refresh their registrations; one that stops
refreshing is unregistered when its registration expires. Serves NSM's registry services and
the gRPC health service until SIGINT or SIGTERM.`

func main() { command(&config{}).Main() }

func command(c *config) envconfig.Command {
	return envconfig.Command{Name: "cmd-registry-memory", About: about, Spec: c, Run: func(ctx context.Context) error {
		return run(ctx, c)
	}}
}

func run(ctx context.Context, c *config) error {
	id, err := c.Config.Load(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = id.Close() }()
	authz, err := c.RegistryPolicyConfig.Options(id)
	if err != nil {
		return err
	}
	registry := registryserver.New(
		registryserver.WithName(string(c.Name)),
		registryserver.WithAuthorizeOptions(authz...),
		registryserver.WithExpireOptions(expire.WithDefaultLifetime(c.ExpirePeriod)),
	)
	errs, err := grpcserve.ServeAll(ctx, c.ListenOn, registry, id.ServerOptions()...)
	if err != nil {
		return err
	}
	log.FromContext(ctx).Info("serving", "url", c.ListenOn.String())
	for err := range errs {
		return err
	}
	return nil
}
