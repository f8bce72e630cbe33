// Command cmd-registry-k8s is a Network Service Mesh registry that keeps network services and
// endpoints in the Kubernetes API, as NSM's custom resources (NetworkService,
// NetworkServiceEndpoint of networkservicemesh.io/v1) in one namespace: endpoints register there
// and refresh their registration, nsmgrs find and watch them there. Several replicas on one API
// server give the same answers, and the records outlive every replica. An endpoint that stops
// refreshing is deleted when its registration expires, by whichever replica sees it first.
//
// It serves the chains of sdk/pkg/registry/chains/registryserver ending in sdk-k8s's store
// (pkg/registry/etcd), and the gRPC health service, on each URL of NSM_LISTEN_ON, until SIGINT
// or SIGTERM. It reaches the API server with KUBECONFIG, or in a pod with its service account;
// it stops at start when it cannot, or when the CRDs are not installed.
package main

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"vwire.dev/sdk-k8s/pkg/registry/etcd"
	v1 "vwire.dev/sdk-k8s/pkg/tools/k8s/apis/networkservicemesh.io/v1"
	"vwire.dev/sdk-k8s/pkg/tools/k8s/k8sconfig"
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
	Namespace    k8sconfig.Namespace  `default:"default" desc:"the Kubernetes namespace of the NetworkService and NetworkServiceEndpoint objects it keeps (NSM's manifests give the pod's own)"`
	ExpirePeriod time.Duration        `default:"1m" split_words:"true" desc:"lifetime of an endpoint registration that asks for none; an endpoint that does not register again within it is deleted"`
	KubeletQPS   int                  `default:"205" split_words:"true" desc:"requests per second it sends the API server at most (bursts of twice as many)"`
	Kubeconfig   string               `env:"KUBECONFIG" desc:"a kubeconfig file for the API server; unset: the pod's service account (in-cluster)"`

	MaxTokenLifetime       time.Duration `split_words:"true" unused:"this registry signs nothing: it passes no registration on" desc:"lifetime of the tokens it signs"`
	RegistryClientPolicies string        `split_words:"true" unused:"no client-side policies: a component trusts the answers of the registry it reached over mutual TLS" desc:"OPA policy files (.rego) and directories that check the answers of registries it asks"`
	ProxyRegistryURL       envconfig.URL `split_words:"true" unused:"no interdomain registry yet" desc:"the registry proxy that answers for other domains (name@domain)"`
	envconfig.NotYet
}

const about = `cmd-registry-k8s: a Network Service Mesh registry that keeps network services and endpoints
in the Kubernetes API as NSM's custom resources (networkservicemesh.io/v1), so that replicas
answer alike and the records outlive them. Endpoints register and refresh their registrations;
one that stops refreshing is deleted when its registration expires. Serves NSM's registry
services and the gRPC health service until SIGINT or SIGTERM.`

func main() { command(&config{}).Main() }

func command(c *config) envconfig.Command {
	return envconfig.Command{Name: "cmd-registry-k8s", About: about, Spec: c, Run: func(ctx context.Context) error {
		return run(ctx, c)
	}}
}

func run(ctx context.Context, c *config) error {
	id, err := c.Config.Load(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = id.Close() }()
	client, err := connect(ctx, c)
	if err != nil {
		return err
	}
	ns := string(c.Namespace)
	authz, err := c.RegistryPolicyConfig.Options(id)
	if err != nil {
		return err
	}
	registry := registryserver.New(
		registryserver.WithName(string(c.Name)),
		registryserver.WithAuthorizeOptions(authz...),
		registryserver.WithExpireOptions(expire.WithDefaultLifetime(c.ExpirePeriod)),
		registryserver.WithStores(etcd.NewNS(client, ns), etcd.NewNSE(ctx, client, ns)),
	)
	errs, err := grpcserve.ServeAll(ctx, c.ListenOn, registry, id.ServerOptions()...)
	if err != nil {
		return err
	}
	log.FromContext(ctx).Info("serving", "url", c.ListenOn.String(), "namespace", ns)
	for err := range errs {
		return err
	}
	return nil
}

// connectTimeout bounds the check at start that the API server answers and knows NSM's kinds.
const connectTimeout = 30 * time.Second

// connect returns a client of the API server, once it listed both kinds in the namespace.
func connect(ctx context.Context, c *config) (*v1.Client, error) {
	where := "the pod's service account"
	if c.Kubeconfig != "" {
		where = "KUBECONFIG " + c.Kubeconfig
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("no API server from %s: %w; set KUBECONFIG to a kubeconfig file, or run in a pod with a service account", where, err)
	}
	cfg.QPS, cfg.Burst = float32(c.KubeletQPS), 2*c.KubeletQPS
	client, err := v1.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	one := metav1.ListOptions{Limit: 1}
	if _, err = client.NetworkServices(string(c.Namespace)).List(ctx, one); err == nil {
		_, err = client.NetworkServiceEndpoints(string(c.Namespace)).List(ctx, one)
	}
	if err != nil {
		return nil, fmt.Errorf("API server %s (from %s): listing NSM's objects in namespace %s: %w; are the CRDs installed (deployments-k8s/apps/registry-k8s) and may this identity use them?",
			cfg.Host, where, c.Namespace, err)
	}
	return client, nil
}
