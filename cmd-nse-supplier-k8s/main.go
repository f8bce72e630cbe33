// Command cmd-nse-supplier-k8s is a supplier endpoint, for topology-aware scale from zero: it
// registers itself for network services whose matches send a client to it only when no endpoint
// runs on the client's node, and answers such a Request by starting one there: a pod made from
// the template of NSM_POD_DESCRIPTION_FILE, on the node the connection's nodeName label names
// (which the client's nsmgr sets). Once the new endpoint is registered it tells the client to ask
// again (Unavailable); the client's retry then reaches the endpoint on its own node. It never
// carries traffic itself.
//
// It serves the endpoint chain (sdk/pkg/networkservice/chains/endpoint) ending in spawn
// (sdk/pkg/networkservice/common/spawn), whose Start is internal/supplier: one pod per node and
// service, with a name that does not change, so clients of one node, and a supplier that
// restarted, share it. It deletes the pods it made once they end (the endpoint retires when
// idle, NSM_IDLE_TIMEOUT of cmd-nse-icmp-responder). It registers at NSM_CONNECT_TO (the node's
// nsmgr) and watches the registry there for the endpoints it starts; it reaches the API server
// with KUBECONFIG, or in a pod with its service account, which needs create, get, watch and
// delete on pods of NSM_NAMESPACE only. At SIGINT or SIGTERM it unregisters, then stops serving.
package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"vwire.dev/cmd-nse-supplier-k8s/internal/supplier"
	"vwire.dev/sdk-k8s/pkg/tools/k8s/k8sconfig"
	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/common/spawn"
	regadapters "vwire.dev/sdk/pkg/registry/core/adapters"
	"vwire.dev/sdk/pkg/registry/register"
	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

type config struct {
	envconfig.Common
	spiffe.Config
	authorize.PolicyConfig
	Name               envconfig.Name      `default:"nse-supplier-k8s" split_words:"true" desc:"the supplier's name in the registry; unique among endpoints"`
	ServiceNames       envconfig.Names     `required:"true" split_words:"true" alias:"NSM_SERVICE_NAME" desc:"the network services it supplies endpoints of; their matches send a client here when its node has none"`
	Labels             envconfig.Labels    `split_words:"true" desc:"its labels for each of its services, which the services' matches select the supplier by: app=icmp-responder-supplier"`
	PodDescriptionFile string              `default:"pod.yaml" split_words:"true" desc:"the pod template: a v1 Pod in YAML where {{ .NetworkService }}, {{ .NodeName }} and (as NSM's) {{ index .Labels \"nodeName\" }} are replaced; its endpoint must register under the pod's name (NSM_NAME from metadata.name)"`
	Namespace          k8sconfig.Namespace `default:"default" desc:"the Kubernetes namespace it makes pods in (NSM's manifests give the pod's own)"`
	StartTimeout       time.Duration       `default:"1m" split_words:"true" desc:"how long a start may take, from making the pod to its endpoint's registration; past it the pod is deleted and the client told"`
	ListenOn           envconfig.URL       `split_words:"true" desc:"where to serve, and the URL it registers (default: a socket in a new temporary directory)"`
	ConnectTo          envconfig.URL       `default:"unix:///var/lib/networkservicemesh/nsm.io.sock" split_words:"true" desc:"where to register and watch for the endpoints it starts: the node's nsmgr, or a registry"`
	RegisterTimeout    time.Duration       `default:"15s" split_words:"true" desc:"how long the first registration may wait for the registry to answer; also bounds the unregistration at exit"`
	MaxTokenLifetime   time.Duration       `default:"10m" split_words:"true" desc:"lifetime of the tokens it signs"`
	PassSocket         bool                `default:"true" split_words:"true" desc:"when NSM_LISTEN_ON and NSM_CONNECT_TO are both unix sockets, hand the listening socket to the nsmgr as a descriptor (an inode:// URL), so it reaches the supplier from any mount namespace; false registers the socket's path, for a registry reached directly"`
	Kubeconfig         string              `env:"KUBECONFIG" desc:"a kubeconfig file for the API server; unset: the pod's service account (in-cluster)"`

	Payload                string `split_words:"true" unused:"the supplier registers no network service: the service's record, with its matches, is the operator's" desc:"the payload of the service it provides"`
	RegistryClientPolicies string `split_words:"true" unused:"no client-side policies: a component trusts the answers of the registry it reached over mutual TLS" desc:"OPA policy files (.rego) and directories that check the registry's answers"`
	envconfig.NotYet
}

const about = `cmd-nse-supplier-k8s: a Network Service Mesh supplier endpoint, for scale from zero. A client
its service's matches send here (no endpoint on the client's node) gets an endpoint started on
its node, a pod from the template of NSM_POD_DESCRIPTION_FILE, and is told to ask again once that
endpoint is registered. Pods that ended are deleted. It registers at NSM_CONNECT_TO and
unregisters at SIGINT or SIGTERM.`

func main() { command(&config{}).Main() }

func command(c *config) envconfig.Command {
	return envconfig.Command{Name: "cmd-nse-supplier-k8s", About: about, Spec: c, Run: func(ctx context.Context) error {
		return run(ctx, c)
	}}
}

func run(ctx context.Context, c *config) error {
	text, err := os.ReadFile(c.PodDescriptionFile)
	if err != nil {
		return fmt.Errorf("NSM_POD_DESCRIPTION_FILE: %w", err)
	}
	var tmpl *supplier.Template
	for _, service := range c.ServiceNames {
		if tmpl, err = supplier.ParseTemplate(c.PodDescriptionFile, text, service, string(c.Namespace)); err != nil {
			return err
		}
	}
	pods, err := connect(ctx, c)
	if err != nil {
		return err
	}
	id, err := c.Config.Load(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = id.Close() }()
	name := string(c.Name)
	tokens, err := id.Tokens(name, c.MaxTokenLifetime)
	if err != nil {
		return err
	}
	authz, err := c.PolicyConfig.Options(id)
	if err != nil {
		return err
	}
	nse := &registry.NetworkServiceEndpoint{
		Name:                 name,
		NetworkServiceNames:  c.ServiceNames,
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{},
	}
	for _, service := range c.ServiceNames {
		nse.NetworkServiceLabels[service] = &registry.NetworkServiceLabels{Labels: c.Labels}
	}
	opts := []register.Option{register.WithIdentity(id, tokens), register.WithTimeout(c.RegisterTimeout, "NSM_REGISTER_TIMEOUT")}
	if !c.PassSocket {
		opts = append(opts, register.WithSocketPath())
	}
	var reaping sync.WaitGroup
	defer reaping.Wait() // reaping ends with serving
	return register.Serve(ctx, c.ListenOn.URL, c.ConnectTo.URL, nse, func(serving context.Context, cc grpc.ClientConnInterface) (grpcserve.Registrar, error) {
		// The supplier watches the registry at NSM_CONNECT_TO for the endpoints it starts.
		sup := supplier.New(pods, string(c.Namespace), tmpl,
			regadapters.NSEClient(registry.NewNetworkServiceEndpointRegistryClient(cc)), c.StartTimeout)
		reaping.Go(func() { sup.Reap(serving) })
		return endpoint.NewServer(serving, tokens,
			endpoint.WithName(name),
			endpoint.WithAuthorizeOptions(authz...),
			endpoint.WithAdditionalFunctionality(spawn.NewServer(sup.Start)),
		), nil
	}, opts...)
}

// connectTimeout bounds the check at start that the API server answers and lets it read pods.
const connectTimeout = 30 * time.Second

// probePod is a name no pod has: getting it shows the API server answers and allows get.
const probePod = "nse-supplier-k8s-access-check"

// connect returns the pods of NSM_NAMESPACE, once the API server answered a get there.
func connect(ctx context.Context, c *config) (typedcorev1.PodInterface, error) {
	where := "the pod's service account"
	if c.Kubeconfig != "" {
		where = "KUBECONFIG " + c.Kubeconfig
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("no API server from %s: %w; set KUBECONFIG to a kubeconfig file, or run in a pod with a service account", where, err)
	}
	// The core group's client alone: the whole clientset would double the image.
	core, err := typedcorev1.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	pods := core.Pods(string(c.Namespace))
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if _, err := pods.Get(ctx, probePod, metav1.GetOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("API server %s (from %s): get a pod in namespace %s: %w; may this identity create, get, watch and delete pods there (deployments-k8s/apps/nse-supplier-k8s)?",
			cfg.Host, where, c.Namespace, err)
	}
	return pods, nil
}
