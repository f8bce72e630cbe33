package spiffe

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CA is a trust domain's certificate authority kept in memory (or in two files, SaveCA): it
// issues X.509 SVIDs of its domain. For meshes without SPIRE and for tests; SPIRE is the CA of
// a deployment.
type CA struct {
	td   spiffeid.TrustDomain
	key  crypto.Signer
	cert *x509.Certificate
}

// caLifetime is how long a CA's own certificate lasts: a local mesh's trust domain outlives
// any SVID it issues.
const caLifetime = 10 * 365 * 24 * time.Hour

// NewCA makes the CA of trust domain td, with a new Ed25519 key (see Issue).
func NewCA(td spiffeid.TrustDomain) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("spiffe: NewCA needs a trust domain")
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("spiffe: CA key of %s: %w", td, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"vwire"}, CommonName: td.Name()},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("spiffe: CA certificate of %s: %w", td, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{td: td, key: key, cert: cert}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}

// TrustDomain is the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Bundle is the trust bundle of the CA's domain: its certificate.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

// Issue makes an X.509 SVID for id, valid from now for ttl, with a new Ed25519 key. Ed25519
// keeps the certificate small (its public key and the CA's signature are shorter than ECDSA's,
// its algorithm names too), and the certificate travels in the x5c header of every token the
// SVID signs, with every message of the connection; its tokens are signed with EdDSA.
func (ca *CA) Issue(id spiffeid.ID, ttl time.Duration) (*x509svid.SVID, error) {
	if !id.MemberOf(ca.td) {
		return nil, fmt.Errorf("spiffe: %q is not in trust domain %s", id, ca.td)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("spiffe: SVID of %s: lifetime %v is not positive", id, ttl)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("spiffe: key of %s: %w", id, err)
	}
	now := time.Now()
	// No subject: the SPIFFE ID is the SVID's name (the URI SAN, then critical), and every byte
	// of the certificate travels in the x5c header of each token the SVID signs.
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             now.Add(-time.Minute), // peers' clocks differ a little
		NotAfter:              now.Add(ttl),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("spiffe: SVID of %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}, nil
}

// Source issues an SVID for id lasting ttl and returns it with the CA's bundle as a Source that
// never changes.
func (ca *CA) Source(id spiffeid.ID, ttl time.Duration) (Source, error) {
	svid, err := ca.Issue(id, ttl)
	if err != nil {
		return nil, err
	}
	return fixed{svid, ca.Bundle()}, nil
}

// fixed is a Source that never changes.
type fixed struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

func (f fixed) GetX509SVID() (*x509svid.SVID, error) { return f.svid, nil }

func (f fixed) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return f.bundle.GetX509BundleForTrustDomain(td)
}

// File names in a folder of identity files (Files, WriteFiles).
const (
	SVIDFile   = "svid.pem"     // the SVID's certificate chain, leaf first
	KeyFile    = "svid_key.pem" // its private key, PKCS#8
	BundleFile = "bundle.pem"   // the trust domain's CA certificates
)

// WriteFiles issues an SVID for id lasting ttl and writes it, its key and the bundle into dir
// (made if missing), each file replaced at once (a reader sees the old file or the new one). The
// key file is readable by its owner only.
func (ca *CA) WriteFiles(dir string, id spiffeid.ID, ttl time.Duration) error {
	svid, err := ca.Issue(id, ttl)
	if err != nil {
		return err
	}
	certs, key, err := svid.Marshal()
	if err != nil {
		return fmt.Errorf("spiffe: SVID of %s: %w", id, err)
	}
	bundle, err := ca.Bundle().Marshal()
	if err != nil {
		return fmt.Errorf("spiffe: bundle of %s: %w", ca.td, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("spiffe: %w", err)
	}
	// The bundle first and the certificate last: a reader that sees the new certificate sees its
	// key and its CA too.
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{{BundleFile, bundle, 0o644}, {KeyFile, key, 0o600}, {SVIDFile, certs, 0o644}} {
		if err := replaceFile(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	return nil
}

// CA files in a folder (SaveCA, LoadCA).
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca_key.pem"
)

// SaveCA writes the CA's certificate and key into dir, so that LoadCA gives the same CA to a
// later process (a component that joins a running local mesh, a rotation).
func (ca *CA) SaveCA(dir string) error {
	key, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("spiffe: CA key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("spiffe: %w", err)
	}
	if err := replaceFile(filepath.Join(dir, CAKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		return err
	}
	return replaceFile(filepath.Join(dir, CACertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o644)
}

// LoadCA reads the CA SaveCA wrote into dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("spiffe: CA: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("spiffe: CA: %w", err)
	}
	certBlock, _ := pem.Decode(certPEM)
	keyBlock, _ := pem.Decode(keyPEM)
	if certBlock == nil || keyBlock == nil {
		return nil, fmt.Errorf("spiffe: CA in %s: %s or %s is not PEM", dir, CACertFile, CAKeyFile)
	}
	cert, err := x509.ParseCertificate(certBlock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("spiffe: CA certificate in %s: %w", dir, err)
	}
	key, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("spiffe: CA key in %s: %w", dir, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("spiffe: CA key in %s cannot sign", dir)
	}
	if len(cert.URIs) != 1 {
		return nil, fmt.Errorf("spiffe: CA certificate in %s names no trust domain", dir)
	}
	td, err := spiffeid.TrustDomainFromURI(cert.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("spiffe: CA certificate in %s: %w", dir, err)
	}
	return &CA{td: td, key: signer, cert: cert}, nil
}

// replaceFile writes data to a new file beside path and renames it to path.
func replaceFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("spiffe: %w", err)
	}
	defer os.Remove(tmp.Name()) // gone already after a successful rename
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("spiffe: write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("spiffe: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("spiffe: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("spiffe: %w", err)
	}
	return nil
}
