// Command cmd-admission-webhook-k8s is a mutating admission webhook: a pod (or a Deployment,
// StatefulSet, DaemonSet or ReplicaSet pod template) annotated networkservicemesh.io:
// kernel://icmp-responder/nsm-1 gets vwire's client injected (internal/inject says what).
//
// At start it makes its serving certificate and registers its own MutatingWebhookConfiguration
// (internal/selfregister), named NSM_NAME, that sends it the creation of pods and workloads from
// every namespace but kube-system and its own (so that it can always start itself); at SIGINT or
// SIGTERM it removes the configuration, then stops serving. The API server calls it through its
// Service (NSM_SERVICE_NAME in NSM_NAMESPACE), or at NSM_WEBHOOK_URL (outside a cluster, tests).
// It reaches the API server with KUBECONFIG, or in a pod with its service account.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"vwire.dev/cmd-admission-webhook-k8s/internal/inject"
	"vwire.dev/cmd-admission-webhook-k8s/internal/selfregister"
	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/log"
)

type config struct {
	envconfig.Common
	Name                  envconfig.Name   `default:"admission-webhook-k8s" split_words:"true" desc:"the name of its MutatingWebhookConfiguration; the webhook in it is <NSM_NAME>.<NSM_ANNOTATION>"`
	ServiceName           dnsLabel         `default:"default" split_words:"true" desc:"the Service the API server calls it through: https://<NSM_SERVICE_NAME>.<NSM_NAMESPACE>.svc:443/mutate"`
	Namespace             dnsLabel         `default:"default" split_words:"true" desc:"its own namespace: its Service's, and, with kube-system, never sent to it"`
	Annotation            string           `default:"networkservicemesh.io" split_words:"true" desc:"the annotation holding a pod's client URLs (a pod without one takes its namespace's)"`
	Labels                envconfig.Labels `split_words:"true" desc:"labels added to every injected pod: spiffe.io/spiffe-id:true"`
	NSURLEnvName          string           `default:"NSM_NETWORK_SERVICES" split_words:"true" desc:"the variable the injected containers get the annotation's client URLs in"`
	InitContainerImages   images           `split_words:"true" desc:"images of init containers run to completion before the client (vwire's client needs none)"`
	ContainerImages       images           `required:"true" split_words:"true" desc:"the client's image (vwire's cmd-nsc), run as a native sidecar and, as <name>-wait, to wait for the vWires; more images run as more sidecars"`
	Envs                  envs             `split_words:"true" desc:"more variables for every injected container: NSM_LOG_LEVEL=DEBUG,NSM_REQUEST_TIMEOUT=30s"`
	WebhookMode           mode             `default:"selfregister" split_words:"true" desc:"selfregister: make its own certificate and configuration (NSM's spire mode needs SPIFFE, which vwire has not yet)"`
	CertFilePath          string           `split_words:"true" desc:"a serving certificate (PEM) to use instead of making one; with NSM_KEY_FILE_PATH"`
	KeyFilePath           string           `split_words:"true" desc:"the key of NSM_CERT_FILE_PATH (PEM)"`
	CABundleFilePath      string           `split_words:"true" desc:"the CA of NSM_CERT_FILE_PATH (PEM), for the configuration's caBundle; without it the API server's own roots"`
	SidecarLimitsMemory   quantity         `default:"80Mi" split_words:"true" desc:"memory limit of each injected container"`
	SidecarLimitsCPU      quantity         `default:"200m" split_words:"true" desc:"CPU limit of each injected container"`
	SidecarRequestsMemory quantity         `default:"40Mi" split_words:"true" desc:"memory request of each injected container"`
	SidecarRequestsCPU    quantity         `default:"100m" split_words:"true" desc:"CPU request of each injected container"`
	KubeletQPS            int              `default:"50" split_words:"true" desc:"requests per second to the API server (burst: twice as many)"`
	ListenOn              listenURL        `default:"tcp://:443" split_words:"true" desc:"where it serves HTTPS: /mutate for the API server, /ready for a readiness probe; port 0 picks a free one"`
	WebhookURL            httpsURL         `split_words:"true" desc:"URL mode: the API server calls this https URL instead of the Service (outside a cluster, tests); without a port, the one it listens on"`
}

const about = `cmd-admission-webhook-k8s: a mutating admission webhook that injects vwire's client into
pods (and pod templates) annotated with client URLs: networkservicemesh.io: kernel://icmp-responder/nsm-1.
It registers its own MutatingWebhookConfiguration at start and removes it at stop. It reaches the
API server with the kubeconfig file KUBECONFIG names, or, in a pod, with its service account.`

// Bounds of the webhook's work.
const (
	// reviewTimeout is how long the API server waits for an answer (NSM's deployment says 10 s).
	reviewTimeout = 10 * time.Second
	// namespaceTimeout bounds a namespace lookup within a review.
	namespaceTimeout = 2 * time.Second
	// stopTimeout bounds removing the configuration and finishing the reviews under way at stop.
	stopTimeout = 10 * time.Second
)

func main() { command(&config{}).Main() }

func command(c *config) envconfig.Command {
	return envconfig.Command{Name: "cmd-admission-webhook-k8s", About: about, Spec: c, Run: func(ctx context.Context) error {
		if err := c.check(); err != nil {
			return err
		}
		return run(ctx, c)
	}}
}

// check checks what no single variable can: how they go together.
func (c *config) check() error {
	if c.KubeletQPS <= 0 {
		return fmt.Errorf("NSM_KUBELET_QPS: %d: must be positive", c.KubeletQPS)
	}
	if (c.CertFilePath == "") != (c.KeyFilePath == "") {
		return errors.New("NSM_CERT_FILE_PATH and NSM_KEY_FILE_PATH: give both or neither")
	}
	if c.CABundleFilePath != "" && c.CertFilePath == "" {
		return errors.New("NSM_CA_BUNDLE_FILE_PATH: is the CA of NSM_CERT_FILE_PATH, which is not set")
	}
	if len(c.ContainerImages) == 0 {
		return errors.New("NSM_CONTAINER_IMAGES: empty; give the client's image, e.g. ghcr.io/vwire/cmd-nsc:v1")
	}
	wait := inject.ContainerName(c.ContainerImages[0]) + inject.WaitSuffix
	if msgs := validation.IsDNS1123Label(wait); len(msgs) > 0 {
		return fmt.Errorf("NSM_CONTAINER_IMAGES: %q: the waiting container's name %q: %s", c.ContainerImages[0], wait, strings.Join(msgs, "; "))
	}
	taken := map[string]string{wait: "NSM_CONTAINER_IMAGES"}
	for _, list := range []struct {
		name   string
		images images
	}{{"NSM_INIT_CONTAINER_IMAGES", c.InitContainerImages}, {"NSM_CONTAINER_IMAGES", c.ContainerImages}} {
		for _, image := range list.images {
			name := inject.ContainerName(image)
			if other, ok := taken[name]; ok {
				return fmt.Errorf("%s: %s runs as container %q, a name %s has already; give each image its own name", list.name, image, name, other)
			}
			taken[name] = list.name
		}
	}
	for _, e := range c.Envs {
		if e.Name == c.NSURLEnvName || e.Name == c.NSURLEnvName+inject.FileSuffix || slices.Contains(inject.ReservedEnv, e.Name) {
			return fmt.Errorf("NSM_ENVS: %s is set by the webhook itself; remove it", e.Name)
		}
	}
	return nil
}

func run(ctx context.Context, c *config) error {
	logger := log.FromContext(ctx)
	rc, err := restConfig()
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = float32(c.KubeletQPS), 2*c.KubeletQPS
	api, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	ln, err := net.Listen("tcp", c.ListenOn.addr)
	if err != nil {
		return fmt.Errorf("NSM_LISTEN_ON: %w", err)
	}
	defer func() { _ = ln.Close() }()
	client, hosts := c.clientConfig(ln.Addr().(*net.TCPAddr).Port)
	cert, err := c.certificate(hosts, &client)
	if err != nil {
		return err
	}

	webhook := &inject.Config{
		Annotation:  c.Annotation,
		ServicesEnv: c.NSURLEnvName,
		InitImages:  c.InitContainerImages,
		Images:      c.ContainerImages,
		Env:         c.Envs,
		Labels:      c.Labels,
		Resources: corev1.ResourceRequirements{
			Limits:   corev1.ResourceList{corev1.ResourceCPU: c.SidecarLimitsCPU.Quantity, corev1.ResourceMemory: c.SidecarLimitsMemory.Quantity},
			Requests: corev1.ResourceList{corev1.ResourceCPU: c.SidecarRequestsCPU.Quantity, corev1.ResourceMemory: c.SidecarRequestsMemory.Quantity},
		},
		Namespace: func(ctx context.Context, name string) (*corev1.Namespace, error) {
			ctx, cancel := context.WithTimeout(ctx, namespaceTimeout)
			defer cancel()
			return api.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		},
	}
	mux := http.NewServeMux()
	mux.Handle("/mutate", webhook)
	mux.HandleFunc("/ready", func(http.ResponseWriter, *http.Request) {})
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: reviewTimeout,
		// Reviews under way at stop finish with what they need.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ErrorLog:    slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	stopServing := func() error {
		stopping, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
		defer cancel()
		err := srv.Shutdown(stopping)
		if serveErr := <-served; !errors.Is(serveErr, http.ErrServerClosed) {
			err = errors.Join(err, serveErr)
		}
		return err
	}

	unregister, err := selfregister.Register(ctx, api.AdmissionregistrationV1().MutatingWebhookConfigurations(), selfregister.Webhook{
		Name:       string(c.Name),
		Annotation: c.Annotation,
		Client:     client,
		Exclude:    []string{"kube-system", string(c.Namespace)},
		Timeout:    reviewTimeout,
		Rules:      inject.Rules,
	})
	if err != nil {
		return errors.Join(fmt.Errorf("NSM_NAME=%s, NSM_ANNOTATION=%s: %w", c.Name, c.Annotation, err), stopServing())
	}
	logger.Info("registered", "configuration", c.Name, "listen", ln.Addr().String())

	select {
	case <-ctx.Done():
	case err = <-served:
		served <- err // for stopServing
		err = fmt.Errorf("serve HTTPS on %s: %w", ln.Addr(), err)
	}
	removing, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	if unregErr := unregister(removing); unregErr != nil {
		err = errors.Join(err, unregErr)
	} else {
		logger.Info("removed its configuration", "configuration", c.Name)
	}
	return errors.Join(err, stopServing())
}

// restConfig is how to reach the API server: the kubeconfig file KUBECONFIG names, else the
// pod's service account.
func restConfig() (*rest.Config, error) {
	if path := os.Getenv("KUBECONFIG"); path != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("KUBECONFIG: %w", err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no way to the API server: KUBECONFIG is not set, and not in a pod (%w)", err)
	}
	return rc, nil
}

// clientConfig says where the API server calls the webhook, listening on port, and returns the
// host names its certificate must hold.
func (c *config) clientConfig(port int) (admissionregv1.WebhookClientConfig, []string) {
	if c.WebhookURL.URL != nil {
		u := *c.WebhookURL.URL
		if u.Port() == "" {
			u.Host = net.JoinHostPort(u.Hostname(), fmt.Sprint(port))
		}
		s := u.String()
		return admissionregv1.WebhookClientConfig{URL: &s}, []string{u.Hostname()}
	}
	svc, ns := string(c.ServiceName), string(c.Namespace)
	path := "/mutate"
	return admissionregv1.WebhookClientConfig{Service: &admissionregv1.ServiceReference{Namespace: ns, Name: svc, Path: &path}},
		[]string{svc + "." + ns + ".svc", svc + "." + ns, svc + "." + ns + ".svc.cluster.local"}
}

// certificate returns the serving certificate (made for hosts, or read from the files) and
// puts the CA that client must trust in it.
func (c *config) certificate(hosts []string, client *admissionregv1.WebhookClientConfig) (tls.Certificate, error) {
	if c.CertFilePath == "" {
		cert, ca, err := selfregister.Certificate(hosts)
		client.CABundle = ca
		return cert, err
	}
	cert, err := tls.LoadX509KeyPair(c.CertFilePath, c.KeyFilePath)
	if err != nil {
		return cert, fmt.Errorf("NSM_CERT_FILE_PATH, NSM_KEY_FILE_PATH: %w", err)
	}
	if c.CABundleFilePath != "" {
		if client.CABundle, err = os.ReadFile(c.CABundleFilePath); err != nil {
			return cert, fmt.Errorf("NSM_CA_BUNDLE_FILE_PATH: %w", err)
		}
	}
	return cert, nil
}

// images is a list of container images, each running as a container named after it.
type images []string

func (l *images) Decode(value string) error {
	var out images
	err := envconfig.DecodeList(value, func(image string) error {
		if msgs := validation.IsDNS1123Label(inject.ContainerName(image)); len(msgs) > 0 {
			return fmt.Errorf("runs as container %q: %s", inject.ContainerName(image), strings.Join(msgs, "; "))
		}
		out = append(out, image)
		return nil
	})
	*l = out
	return err
}

func (images) TypeName() string { return "image list" }

// envs is a list of NAME=value variables.
type envs []corev1.EnvVar

func (l *envs) Decode(value string) error {
	var out envs
	err := envconfig.DecodeList(value, func(item string) error {
		name, val, ok := strings.Cut(item, "=")
		if !ok {
			return errors.New("not NAME=value")
		}
		if msgs := validation.IsEnvVarName(name); len(msgs) > 0 {
			return fmt.Errorf("%q: %s", name, strings.Join(msgs, "; "))
		}
		if slices.ContainsFunc(out, func(e corev1.EnvVar) bool { return e.Name == name }) {
			return fmt.Errorf("%s given twice", name)
		}
		out = append(out, corev1.EnvVar{Name: name, Value: val})
		return nil
	})
	*l = out
	return err
}

func (envs) TypeName() string { return "NAME=value list" }

func (l envs) String() string {
	out := make([]string, len(l))
	for i, e := range l {
		out[i] = e.Name + "=" + e.Value
	}
	return strings.Join(out, ",")
}

// mode is how the webhook gets its certificate and configuration; only selfregister for now.
type mode string

func (m *mode) Decode(value string) error {
	switch strings.ToLower(value) {
	case "selfregister":
		*m = "selfregister"
		return nil
	case "spire":
		return errors.New("needs SPIFFE, which vwire has not yet; use selfregister, or give NSM_CERT_FILE_PATH and NSM_KEY_FILE_PATH")
	}
	return errors.New("not a mode; use selfregister")
}

func (mode) TypeName() string { return "mode" }

// quantity is a Kubernetes resource quantity: 80Mi, 200m.
type quantity struct{ resource.Quantity }

func (q *quantity) Decode(value string) error {
	parsed, err := resource.ParseQuantity(value)
	if err != nil {
		return errors.New("not a quantity; write 80Mi, 1Gi, 200m, 1")
	}
	q.Quantity = parsed
	return nil
}

func (quantity) TypeName() string { return "quantity" }

// dnsLabel is the name of a Service or namespace.
type dnsLabel string

func (d *dnsLabel) Decode(value string) error {
	if msgs := validation.IsDNS1123Label(value); len(msgs) > 0 {
		return errors.New(strings.Join(msgs, "; "))
	}
	*d = dnsLabel(value)
	return nil
}

func (dnsLabel) TypeName() string { return "name" }

// httpsURL is an https URL with a host.
type httpsURL struct{ *url.URL }

func (h *httpsURL) Decode(value string) error {
	u, err := url.Parse(value)
	switch {
	case err != nil:
		return fmt.Errorf("not a URL: %w", err)
	case u.Scheme != "https" || u.Hostname() == "":
		return errors.New("not an https URL with a host; write https://127.0.0.1:8443/mutate")
	}
	h.URL = u
	return nil
}

func (httpsURL) TypeName() string { return "URL" }

func (h httpsURL) String() string {
	if h.URL == nil {
		return ""
	}
	return h.URL.String()
}

func (q quantity) String() string { return q.Quantity.String() }

// listenURL is a tcp URL to serve on: tcp://host:port, tcp://:443 for every address of the host.
type listenURL struct{ addr string }

func (l *listenURL) Decode(value string) error {
	u, err := url.Parse(value)
	if err != nil || u.Scheme != "tcp" || u.Port() == "" || u.Path != "" {
		return errors.New("serves HTTPS; use tcp://host:port or tcp://:443")
	}
	if _, err := strconv.ParseUint(u.Port(), 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number 0-65535 (0 picks a free one)", u.Port())
	}
	host := u.Hostname()
	if host != "" && net.ParseIP(host) == nil && len(validation.IsDNS1123Subdomain(host)) > 0 {
		return fmt.Errorf("host %q is no IP address or host name", host)
	}
	l.addr = net.JoinHostPort(host, u.Port())
	return nil
}

func (listenURL) TypeName() string { return "URL" }

func (l listenURL) String() string { return "tcp://" + l.addr }
