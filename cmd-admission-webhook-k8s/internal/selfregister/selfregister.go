// Package selfregister lets the webhook stand on its own in a cluster: it makes the webhook's
// serving certificate (Certificate: a CA of its own and a certificate it signs) and registers a
// MutatingWebhookConfiguration that trusts that CA (Register), which it removes at stop.
//
// Why: the API server calls a webhook only over TLS it can verify, and only once a
// configuration names it. NSM's webhook does the same in its "selfregister" mode; a new key pair
// at every start means nothing secret is stored anywhere.
//
// Guarantees: Register replaces a configuration of the same name that a previous run left (it
// would hold that run's CA, which no longer serves), and the function it returns removes only
// the configuration it made (preconditions on its UID and version), so a newer run's survives.
package selfregister

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	admissionregclient "k8s.io/client-go/kubernetes/typed/admissionregistration/v1"
)

// Validity is how long the certificates Certificate makes are valid; a webhook restarted within
// it gets new ones.
const Validity = 365 * 24 * time.Hour

// Certificate makes a CA and a serving certificate it signs for hosts (DNS names or IP
// addresses), and returns the serving certificate with its key, and the CA as PEM, for the
// configuration's caBundle.
func Certificate(hosts []string) (tls.Certificate, []byte, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "vwire admission webhook CA"},
		NotBefore:             now.Add(-time.Minute), // the API server's clock may lag a little
		NotAfter:              now.Add(Validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("selfregister: make the CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	template := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    caTemplate.NotBefore,
		NotAfter:     caTemplate.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			template.IPAddresses = append(template.IPAddresses, ip)
		} else {
			template.DNSNames = append(template.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("selfregister: make the serving certificate for %v: %w", hosts, err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

// serial is a random 128-bit serial number, as RFC 5280 asks of a CA.
func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	return n
}

// Webhook is what the configuration says of the webhook.
type Webhook struct {
	Name       string                              // of the configuration; the webhook's is Name.Annotation
	Annotation string                              // the annotation the webhook reads
	Client     admissionregv1.WebhookClientConfig  // where the API server calls, and the caBundle
	Exclude    []string                            // namespaces never sent to the webhook
	Timeout    time.Duration                       // how long the API server waits for an answer
	Rules      []admissionregv1.RuleWithOperations // what is sent
}

// Configuration returns the MutatingWebhookConfiguration for w.
func (w Webhook) Configuration() *admissionregv1.MutatingWebhookConfiguration {
	fail := admissionregv1.Fail
	none := admissionregv1.SideEffectClassNone
	seconds := int32(w.Timeout / time.Second)
	hook := admissionregv1.MutatingWebhook{
		Name:                    w.Name + "." + w.Annotation,
		ClientConfig:            w.Client,
		Rules:                   w.Rules,
		FailurePolicy:           &fail,
		SideEffects:             &none,
		AdmissionReviewVersions: []string{"v1"},
		TimeoutSeconds:          &seconds,
	}
	if len(w.Exclude) > 0 {
		hook.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: w.Exclude,
		}}}
	}
	return &admissionregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: w.Name},
		Webhooks:   []admissionregv1.MutatingWebhook{hook},
	}
}

// Register creates w's configuration, replacing one of the same name, and returns a function
// that deletes it.
func Register(ctx context.Context, api admissionregclient.MutatingWebhookConfigurationInterface, w Webhook) (func(context.Context) error, error) {
	want := w.Configuration()
	made, err := api.Create(ctx, want, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// A previous run's, with its CA: take it over.
		var old *admissionregv1.MutatingWebhookConfiguration
		if old, err = api.Get(ctx, w.Name, metav1.GetOptions{}); err == nil {
			want.ResourceVersion = old.ResourceVersion
			made, err = api.Update(ctx, want, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("selfregister: register MutatingWebhookConfiguration %q: %w", w.Name, err)
	}
	mine := &metav1.Preconditions{UID: &made.UID, ResourceVersion: &made.ResourceVersion}
	return func(ctx context.Context) error {
		err := api.Delete(ctx, w.Name, metav1.DeleteOptions{Preconditions: mine})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) { // gone, or another run's now
			return fmt.Errorf("selfregister: remove MutatingWebhookConfiguration %q: %w", w.Name, err)
		}
		return nil
	}, nil
}
