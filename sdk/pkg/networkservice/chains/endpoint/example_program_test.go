package endpoint_test

import (
	"context"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/registry/register"
	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

type config struct {
	envconfig.Common
	spiffe.Config
	authorize.PolicyConfig
	Name         envconfig.Name     `default:"icmp-responder-nse" desc:"its name in the registry"`
	ServiceNames envconfig.Names    `default:"icmp-responder" split_words:"true" desc:"the network services it provides"`
	CIDRPrefix   envconfig.Prefixes `default:"169.254.0.0/16" split_words:"true" desc:"where its vWires' addresses come from"`
	ListenOn     envconfig.URL      `split_words:"true" desc:"where it serves (default: a socket in a new temporary folder)"`
	ConnectTo    envconfig.URL      `default:"unix:///var/lib/networkservicemesh/nsm.io.sock" split_words:"true" desc:"the node's nsmgr"`
}

// An NSE's whole program (Example_program is its main): an address pair per vWire, served and
// registered with its services through the node's nsmgr (refreshed, registered again after an nsmgr
// restart), unregistered at SIGINT or SIGTERM; a bad variable or a silent nsmgr is one clear line.
func Example_program() {
	c := &config{}
	envconfig.Command{Name: "icmp-responder", About: "an NSE: a point-to-point vWire per client", Spec: c,
		Run: func(ctx context.Context) error { return run(ctx, c) }}.Main()
}

func run(ctx context.Context, c *config) error {
	id, err := c.Config.Load(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = id.Close() }()
	tokens, err := id.Tokens(string(c.Name), 10*time.Minute)
	if err != nil {
		return err
	}
	authz, err := c.PolicyConfig.Options(id)
	if err != nil {
		return err
	}
	nse := &registry.NetworkServiceEndpoint{Name: string(c.Name), NetworkServiceNames: c.ServiceNames}
	return register.Serve(ctx, c.ListenOn.URL, c.ConnectTo.URL, nse, func(serving context.Context, _ grpc.ClientConnInterface) (grpcserve.Registrar, error) {
		return endpoint.NewServer(serving, tokens, endpoint.WithName(string(c.Name)), endpoint.WithAuthorizeOptions(authz...),
			endpoint.WithAdditionalFunctionality(point2pointipam.NewServer(c.CIDRPrefix...))), nil
	}, register.WithIdentity(id, tokens), register.WithServices(payload.IP))
}
