// Package token makes the tokens that each hop of a connection puts in its path segment and
// sends with every call, and reads the ones a caller sent.
//
// A token is a JWT whose subject (sub) names the hop that made it, whose audience (aud) names the
// hop it is for, and whose exp claim is the time it stops authorizing the connection: the claims
// of NSM's tokens, and no others (no iss, which would repeat sub, no iat, no typ header), since
// every token of a path travels with every message of the connection, at every hop. Generators
// (GeneratorFunc) make them: NewJWT signs with the hop's own key; NewSigned with a key that may change, an SVID's
// (sdk/pkg/tools/spiffe.Tokens), putting the SVID's certificate chain in the token's x5c header
// so that a Verifier checks who signed it with the trust bundle alone; NewInsecure, for
// tests and local meshes without identities, signs with InsecureKey, an HMAC key published
// here, so its tokens prove nothing but parse like real ones. The expiry a generator returns is
// exactly the token's exp claim (whole seconds), so a path segment's expires and its token agree.
//
// Signing is the dearest step of a hop's Request (every hop signs its path segment and every
// call it makes), so a generator signs at most once per second for each audience: asked again
// within the same second for the same audience, it returns the token it signed then, which has
// the very claims a new one would have (exp is in whole seconds). A token handed out is
// therefore never older, nor closer to its expiry, than a freshly signed one. Generators are
// safe for concurrent use and remember the tokens of at most 64 audiences. A key that rotates
// (NewSigned's, an SVID's) signs from the next second on.
//
// Generators read time from their clock option (WithClock), not from a context: they are called
// by gRPC for per-RPC credentials where no context of ours reaches. Components pass the clock of
// their context when they build the generator.
//
// On the wire (NSM's convention) a caller sends its token as gRPC metadata on every call:
// nsm-client-token and nsm-client-token-expires (RFC 3339 with nanoseconds, UTC).
// NewPerRPCCredentials adds them to a client connection; FromIncomingContext reads them on the
// server, where updatetoken uses them for the previous hop's path segment.
package token

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"vwire.dev/sdk/pkg/tools/clock"
)

// GeneratorFunc makes a token for this hop and returns it with its expiry. authInfo is the
// transport's view of the peer (nil without transport security).
type GeneratorFunc func(authInfo credentials.AuthInfo) (token string, expires time.Time, err error)

// Metadata keys of a caller's token on the wire.
const (
	TokenKey   = "nsm-client-token"
	ExpiresKey = "nsm-client-token-expires"
)

// InsecureKey is the HMAC (HS256) key of NewInsecure's tokens. It is public: such a token
// proves nothing about who made it.
const InsecureKey = "vwire insecure token key: public, proves nothing"

// InsecureName is the subject of NewInsecure's tokens unless WithName says otherwise.
const InsecureName = "insecure"

// Option changes how a generator makes tokens.
type Option func(*options)

type options struct {
	clock    clock.Clock
	audience []string
	name     string
}

// WithClock makes the generator read time from c (default: the real clock).
func WithClock(c clock.Clock) Option { return func(o *options) { o.clock = c } }

// WithAudience sets the token's aud claim. Without it, the aud claim is the peer's SPIFFE ID
// when the transport is TLS and the peer's certificate carries a URI, and absent otherwise.
func WithAudience(aud ...string) Option {
	return func(o *options) { o.audience = append([]string(nil), aud...) }
}

// WithName sets the subject of NewInsecure's tokens (default InsecureName), so that
// tests can tell the hops apart. NewJWT takes its name as a parameter and ignores this option.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// NewInsecure returns a generator of tokens lasting lifetime, signed with the public
// InsecureKey (HS256). For tests and for meshes that run without identities.
func NewInsecure(lifetime time.Duration, opts ...Option) GeneratorFunc {
	o := build(lifetime, opts)
	name := o.name
	if name == "" {
		name = InsecureName
	}
	return o.generator(name, lifetime, func(claims jwt.RegisteredClaims) (string, error) {
		tok, err := newToken(jwt.SigningMethodHS256, claims).SignedString([]byte(InsecureKey))
		if err != nil {
			return "", fmt.Errorf("token: sign insecure token: %w", err)
		}
		return tok, nil
	})
}

// NewJWT returns a generator of tokens lasting lifetime, about name (their sub; a SPIFFE ID in
// production), signed by signer. The algorithm follows signer's public key at each call
// (ECDSA P-256/384/521: ES256/384/512, RSA: RS256, Ed25519: EdDSA), so a signer whose key
// rotates may change type between calls.
func NewJWT(signer crypto.Signer, name string, lifetime time.Duration, opts ...Option) GeneratorFunc {
	if signer == nil {
		panic("token: NewJWT needs a signer")
	}
	return NewSigned(func() (crypto.Signer, []*x509.Certificate, error) { return signer, nil, nil }, name, lifetime, opts...)
}

// KeyFunc returns the key to sign with now and the certificate chain that vouches for it, leaf
// first (nil: none). An SVID source gives both from one SVID, so that they always match.
type KeyFunc func() (crypto.Signer, []*x509.Certificate, error)

// NewSigned is NewJWT with a key that may change at every call (an SVID's, which rotates). A
// token whose key comes with certificates carries them in its x5c header (RFC 7515), so that a
// verifier (Verifier) checks it against its trust bundle alone: a peer's certificate seen in a
// TLS handshake is the one of before a rotation for as long as the connection lasts.
func NewSigned(key KeyFunc, name string, lifetime time.Duration, opts ...Option) GeneratorFunc {
	if key == nil {
		panic("token: NewSigned needs a key")
	}
	if name == "" {
		panic("token: a signed token needs the name of this hop")
	}
	o := build(lifetime, opts)
	return o.generator(name, lifetime, func(claims jwt.RegisteredClaims) (string, error) {
		signer, chain, err := key()
		if err == nil && signer == nil {
			err = errors.New("no key")
		}
		var tok string
		if err == nil {
			tok, err = sign(signer, chain, claims)
		}
		if err != nil {
			return "", fmt.Errorf("token: sign token of %s: %w", name, err)
		}
		return tok, nil
	})
}

func build(lifetime time.Duration, opts []Option) *options {
	if lifetime < time.Second {
		panic(fmt.Sprintf("token: lifetime %v is shorter than the one-second precision of a JWT", lifetime))
	}
	o := &options{clock: clock.Real{}}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// generator returns the GeneratorFunc that makes name's tokens lasting lifetime with sign, and
// hands out again the token it signed last for the same claims: the same audience within the
// same second (exp has whole seconds), which is the token a new signature would
// produce (for HS256 byte for byte; for ECDSA a signature just as valid).
func (o *options) generator(name string, lifetime time.Duration, sign func(jwt.RegisteredClaims) (string, error)) GeneratorFunc {
	reused := &recent{tokens: map[string]signed{}, peers: map[*x509.Certificate][]string{}}
	return func(authInfo credentials.AuthInfo) (string, time.Time, error) {
		now := o.clock.Now()
		issued, expires := now.Truncate(time.Second), now.Add(lifetime).Truncate(time.Second)
		aud := o.audience
		if aud == nil {
			aud = reused.peerID(authInfo)
		}
		key := strings.Join(aud, "\x00")
		if tok, ok := reused.get(key, issued, expires); ok {
			return tok, expires, nil
		}
		tok, err := sign(jwt.RegisteredClaims{
			Subject:   name,
			Audience:  aud,
			ExpiresAt: jwt.NewNumericDate(expires),
		})
		if err != nil {
			return "", time.Time{}, err
		}
		reused.put(key, signed{token: tok, issued: issued, expires: expires})
		return tok, expires, nil
	}
}

// recentLimit bounds how many audiences a generator remembers a token for.
const recentLimit = 64

// recent holds the last token a generator signed for each audience, and the SPIFFE IDs of the
// peers it signed for.
type recent struct {
	mu     sync.Mutex
	tokens map[string]signed              // by audience, joined; at most recentLimit
	peers  map[*x509.Certificate][]string // peerID's answers, by certificate; at most recentLimit
}

type signed struct {
	token           string
	issued, expires time.Time
}

// get returns the token signed for aud with these iat and exp claims, if there is one.
func (r *recent) get(aud string, issued, expires time.Time) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.tokens[aud]
	if !ok || !s.issued.Equal(issued) || !s.expires.Equal(expires) {
		return "", false
	}
	return s.token, true
}

// put remembers s for aud; when as many audiences are remembered as allowed, it forgets them
// all first (their tokens are of an earlier second or soon will be).
func (r *recent) put(aud string, s signed) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.tokens[aud]; !ok && len(r.tokens) >= recentLimit {
		clear(r.tokens)
	}
	r.tokens[aud] = s
}

// peerID returns the first URI of the TLS peer's certificate (its SPIFFE ID), if any. A
// connection shows the same certificate to every call, so the answer is remembered by
// certificate rather than formatted from the URI at every token asked for.
func (r *recent) peerID(authInfo credentials.AuthInfo) []string {
	tlsInfo, ok := authInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		return nil
	}
	cert := tlsInfo.State.PeerCertificates[0]
	r.mu.Lock()
	defer r.mu.Unlock()
	if id, ok := r.peers[cert]; ok {
		return id
	}
	var id []string
	if len(cert.URIs) > 0 {
		id = []string{cert.URIs[0].String()}
	}
	if len(r.peers) >= recentLimit {
		clear(r.peers)
	}
	r.peers[cert] = id
	return id
}

// sign makes a JWT with any crypto.Signer (a key in memory, in a KMS, or rotating with an SVID),
// which the library's own methods, asserting concrete key types, would refuse.
func sign(signer crypto.Signer, chain []*x509.Certificate, claims jwt.Claims) (string, error) {
	var (
		method jwt.SigningMethod
		hash   crypto.Hash
		size   int // bytes of each of r and s in an ECDSA signature
	)
	switch pub := signer.Public().(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			method, hash = jwt.SigningMethodES256, crypto.SHA256
		case elliptic.P384():
			method, hash = jwt.SigningMethodES384, crypto.SHA384
		case elliptic.P521():
			method, hash = jwt.SigningMethodES512, crypto.SHA512
		default:
			return "", fmt.Errorf("ECDSA curve %s has no JWT algorithm", pub.Curve.Params().Name)
		}
		size = (pub.Curve.Params().BitSize + 7) / 8
	case *rsa.PublicKey:
		method, hash = jwt.SigningMethodRS256, crypto.SHA256
	case ed25519.PublicKey:
		method = jwt.SigningMethodEdDSA
	default:
		return "", fmt.Errorf("key type %T has no JWT algorithm (want ECDSA, RSA or Ed25519)", pub)
	}
	t := newToken(method, claims)
	if len(chain) > 0 {
		x5c := make([]string, len(chain))
		for i, c := range chain {
			x5c[i] = base64.StdEncoding.EncodeToString(c.Raw)
		}
		t.Header["x5c"] = x5c
	}
	signing, err := t.SigningString()
	if err != nil {
		return "", err
	}
	digest := []byte(signing) // Ed25519 signs the message itself
	if hash != 0 {
		h := hash.New()
		h.Write(digest)
		digest = h.Sum(nil)
	}
	sig, err := signer.Sign(rand.Reader, digest, hash)
	if err != nil {
		return "", err
	}
	if size > 0 {
		if sig, err = rawECDSA(sig, size); err != nil {
			return "", err
		}
	}
	return signing + "." + t.EncodeSegment(sig), nil
}

// newToken returns an unsigned JWT of claims whose header says only its algorithm: typ, which
// the library adds, is optional (RFC 7519) and nobody reads it.
func newToken(method jwt.SigningMethod, claims jwt.Claims) *jwt.Token {
	t := jwt.NewWithClaims(method, claims)
	delete(t.Header, "typ")
	return t
}

// rawECDSA turns a crypto.Signer's ASN.1 ECDSA signature into JWT's r||s of fixed size.
func rawECDSA(der []byte, size int) ([]byte, error) {
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(der, &rs); err != nil || len(rest) > 0 {
		return nil, errors.New("signer returned a malformed ECDSA signature")
	}
	out := make([]byte, 2*size)
	rs.R.FillBytes(out[:size])
	rs.S.FillBytes(out[size:])
	return out, nil
}

// NewPerRPCCredentials returns credentials that send the token gen gives for every call (the
// generators of this package give the same token within a second), as the metadata TokenKey and
// ExpiresKey. They do not require transport security: a local mesh
// runs over unix sockets without TLS, and the token is checked by policy, not by the transport.
func NewPerRPCCredentials(gen GeneratorFunc) credentials.PerRPCCredentials {
	if gen == nil {
		panic("token: NewPerRPCCredentials needs a generator")
	}
	return &perRPC{gen: gen}
}

type perRPC struct {
	gen  GeneratorFunc
	last atomic.Pointer[sent] // what was sent last: the same again while the token is reused
}

// sent is the metadata of one token; gRPC only reads it, so calls with the same token share it.
type sent struct {
	token   string
	expires time.Time
	md      map[string]string
}

func (c *perRPC) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	var authInfo credentials.AuthInfo
	if p, ok := peer.FromContext(ctx); ok {
		authInfo = p.AuthInfo
	}
	tok, expires, err := c.gen(authInfo)
	if err != nil {
		return nil, err
	}
	if last := c.last.Load(); last != nil && last.token == tok && last.expires.Equal(expires) {
		return last.md, nil
	}
	md := map[string]string{TokenKey: tok, ExpiresKey: expires.UTC().Format(time.RFC3339Nano)}
	c.last.Store(&sent{token: tok, expires: expires, md: md})
	return md, nil
}

func (*perRPC) RequireTransportSecurity() bool { return false }

// FromIncomingContext returns the token and expiry a caller sent with the call ctx belongs to;
// ok is false when either is missing, repeated or unreadable.
func FromIncomingContext(ctx context.Context) (token string, expires time.Time, ok bool) {
	toks := metadata.ValueFromIncomingContext(ctx, TokenKey)
	if len(toks) == 0 {
		return "", time.Time{}, false
	}
	exps := metadata.ValueFromIncomingContext(ctx, ExpiresKey)
	if len(toks) != 1 || len(exps) != 1 || toks[0] == "" {
		return "", time.Time{}, false
	}
	expires, err := time.Parse(time.RFC3339Nano, exps[0])
	if err != nil {
		return "", time.Time{}, false
	}
	return toks[0], expires, true
}
