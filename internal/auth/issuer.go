package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// The iss and aud of the tokens of the development Issuer.
const (
	DevIssuer   = "tollgate-dev"
	DevAudience = "tollgate"
)

// devKeyFile is the name of the development Issuer's key file in its directory.
const devKeyFile = "dev-issuer-key.pem"

// Issuer mints tokens for development (AUTH_MODE=dev) with an ECDSA P-256 key. Its key ID is the key's
// RFC 7638 thumbprint, so it stays the same for as long as the key file does. It is safe for concurrent
// use.
type Issuer struct {
	key  *ecdsa.PrivateKey
	kid  string
	jwks []byte
}

// LoadOrCreateIssuer returns the Issuer whose key is stored in dir/dev-issuer-key.pem, creating dir
// (mode 0700) and the key file (mode 0600) if they do not exist. Processes racing to create the key all
// end up with the one that was stored first.
func LoadOrCreateIssuer(dir string) (*Issuer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating dev issuer directory: %w", err)
	}
	path := filepath.Join(dir, devKeyFile)
	pemBytes, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		pemBytes, err = createKeyFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("loading dev issuer key: %w", err)
	}
	key, err := parseKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("loading dev issuer key %s: %w", path, err)
	}
	return newIssuer(key)
}

// createKeyFile stores a new key at path unless a key is already there, and returns the PEM at path. The
// key is written to a temporary file that is then hard-linked to path, so that path never holds a partial
// key and an existing key is never replaced.
func createKeyFile(path string) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})

	tmp, err := os.CreateTemp(filepath.Dir(path), "."+devKeyFile+".*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("creating key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(pemBytes)
	if err == nil {
		err = tmp.Sync()
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return nil, fmt.Errorf("writing key file: %w", err)
	}
	switch err := os.Link(tmp.Name(), path); {
	case errors.Is(err, fs.ErrExist):
		return os.ReadFile(path) // another process stored its key first
	case err != nil:
		return nil, fmt.Errorf("storing key file: %w", err)
	}
	return pemBytes, nil
}

func parseKey(pemBytes []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PRIVATE KEY PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing PKCS #8 key: %w", err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("not an ECDSA P-256 key")
	}
	return key, nil
}

func newIssuer(key *ecdsa.PrivateKey) (*Issuer, error) {
	kid, err := thumbprint(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	jwk, err := jwkset.NewJWKFromKey(&key.PublicKey, jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.AlgES256, USE: jwkset.UseSig},
	})
	if err != nil {
		return nil, fmt.Errorf("building dev issuer JWK: %w", err)
	}
	set := jwkset.NewMemoryStorage()
	if err := set.KeyWrite(context.Background(), jwk); err != nil {
		return nil, fmt.Errorf("building dev issuer JWKS: %w", err)
	}
	jwks, err := set.JSONPublic(context.Background())
	if err != nil {
		return nil, fmt.Errorf("encoding dev issuer JWKS: %w", err)
	}
	return &Issuer{key: key, kid: kid, jwks: jwks}, nil
}

// thumbprint returns the RFC 7638 JWK thumbprint of a P-256 public key.
func thumbprint(pub *ecdsa.PublicKey) (string, error) {
	point, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		return "", fmt.Errorf("encoding dev issuer public key: %w", err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	size := (len(point) - 1) / 2
	members := fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":%q,"y":%q}`,
		b64(point[1:1+size]), b64(point[1+size:]))
	sum := sha256.Sum256([]byte(members))
	return b64(sum[:]), nil
}

// devClaims are the claims of the development Issuer's tokens.
type devClaims struct {
	jwt.RegisteredClaims
	Scope string `json:"scope,omitempty"`
}

// Token returns a token for subject sub, valid from now for ttl, granting scopes.
func (i *Issuer) Token(sub string, ttl time.Duration, scopes ...string) (string, error) {
	if sub == "" {
		return "", errors.New("dev token: empty subject")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("dev token: ttl %v is not positive", ttl)
	}
	for _, s := range scopes {
		if s == "" || strings.ContainsFunc(s, unicode.IsSpace) {
			return "", fmt.Errorf("dev token: invalid scope %q", s)
		}
	}
	now := time.Now()
	token := jwt.NewWithClaims(jwt.SigningMethodES256, devClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    DevIssuer,
			Subject:   sub,
			Audience:  jwt.ClaimStrings{DevAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Scope: strings.Join(scopes, " "),
	})
	token.Header["kid"] = i.kid
	signed, err := token.SignedString(i.key)
	if err != nil {
		return "", fmt.Errorf("dev token: signing: %w", err)
	}
	return signed, nil
}

// JWKS returns the JSON Web Key Set of the Issuer's public key, for [Options.JWKSJSON].
func (i *Issuer) JWKS() []byte {
	return slices.Clone(i.jwks)
}
