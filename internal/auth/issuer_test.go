package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// devVerifier returns a Verifier for the tokens of the dev Issuer with the given JWKS.
func devVerifier(t *testing.T, jwks []byte) *Verifier {
	t.Helper()
	return newTestVerifier(t, Options{JWKSJSON: jwks, Issuer: DevIssuer, Audience: DevAudience})
}

func loadIssuer(t *testing.T, dir string) *Issuer {
	t.Helper()
	iss, err := LoadOrCreateIssuer(dir)
	if err != nil {
		t.Fatalf("LoadOrCreateIssuer: %v", err)
	}
	return iss
}

func issue(t *testing.T, iss *Issuer, sub string, ttl time.Duration, scopes ...string) string {
	t.Helper()
	token, err := iss.Token(sub, ttl, scopes...)
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	return token
}

func TestLoadOrCreateIssuerReusesKey(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data", "auth")
	first := loadIssuer(t, dir)
	second := loadIssuer(t, dir)
	if !bytes.Equal(first.JWKS(), second.JWKS()) {
		t.Fatalf("JWKS differ across loads:\n%s\n%s", first.JWKS(), second.JWKS())
	}
	p := verifyOK(t, devVerifier(t, second.JWKS()), issue(t, first, "alice", time.Minute),
		"a token of the first issuer with the JWKS of the second")
	if p.Subject != "alice" {
		t.Errorf("Subject = %q, want alice", p.Subject)
	}

	if runtime.GOOS == "windows" {
		return
	}
	for path, want := range map[string]os.FileMode{filepath.Join(dir, "dev-issuer-key.pem"): 0o600, dir: 0o700} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %v, want %v", path, got, want)
		}
	}
}

func TestLoadOrCreateIssuerConcurrentFirstCalls(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	issuers := make([]*Issuer, 16)
	errs := make([]error, len(issuers))
	var wg sync.WaitGroup
	for i := range issuers {
		wg.Go(func() { issuers[i], errs[i] = LoadOrCreateIssuer(dir) })
	}
	wg.Wait()

	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for i, iss := range issuers {
		if !bytes.Equal(iss.JWKS(), issuers[0].JWKS()) {
			t.Errorf("issuer %d has another key than issuer 0", i)
		}
	}
	verifyOK(t, devVerifier(t, loadIssuer(t, dir).JWKS()), issue(t, issuers[7], "u", time.Minute), "the stored key")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "dev-issuer-key.pem" {
		t.Errorf("directory holds %v, want only the key file", entries)
	}
}

func TestLoadOrCreateIssuerRejectsBadKeyFile(t *testing.T) {
	t.Parallel()
	for name, content := range map[string]string{
		"not PEM":  "hello",
		"bad DER":  "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"RSA type": "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "dev-issuer-key.pem"), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadOrCreateIssuer(dir); err == nil || !strings.Contains(err.Error(), "loading dev issuer key") {
				t.Errorf("LoadOrCreateIssuer error = %v, want a key loading error", err)
			}
		})
	}
}

func TestIssuerToken(t *testing.T) {
	t.Parallel()
	iss := loadIssuer(t, t.TempDir())
	before := time.Now().Truncate(time.Second)
	token := issue(t, iss, "bob", 10*time.Minute, "chat", "admin")

	p := verifyOK(t, devVerifier(t, iss.JWKS()), token, "dev token")
	if p.Subject != "bob" || !slices.Equal(p.Scopes, []string{"chat", "admin"}) {
		t.Errorf("Principal = %+v, want bob with scopes chat, admin", p)
	}
	if p.ExpiresAt.Before(before.Add(10*time.Minute)) || p.ExpiresAt.After(time.Now().Add(10*time.Minute)) {
		t.Errorf("ExpiresAt = %v, want 10 minutes from now", p.ExpiresAt)
	}

	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(iss.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %d keys, want 1", len(set.Keys))
	}
	jwk := set.Keys[0]
	if jwk["kty"] != "EC" || jwk["crv"] != "P-256" || jwk["alg"] != "ES256" || jwk["use"] != "sig" {
		t.Errorf("JWK = %v, want an EC P-256 signing key for ES256", jwk)
	}
	if _, ok := jwk["d"]; ok {
		t.Error("the JWKS holds the private key")
	}

	parsed, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Header["kid"] != jwk["kid"] || parsed.Header["alg"] != "ES256" {
		t.Errorf("header = %v, want alg ES256 and kid %v", parsed.Header, jwk["kid"])
	}
	claims := parsed.Claims.(jwt.MapClaims)
	for _, c := range []string{"iat", "nbf", "exp"} {
		if _, ok := claims[c]; !ok {
			t.Errorf("claim %s missing", c)
		}
	}
	if aud, _ := claims["aud"].([]any); claims["iss"] != DevIssuer || len(aud) != 1 || aud[0] != DevAudience {
		t.Errorf("iss, aud = %v, %v; want %s, [%s]", claims["iss"], claims["aud"], DevIssuer, DevAudience)
	}

	other := newTestVerifier(t, Options{JWKSJSON: iss.JWKS(), Issuer: DevIssuer, Audience: "elsewhere"})
	verifyRejected(t, other, token, "wrong audience")
}

func TestIssuerTokenRejectsBadInput(t *testing.T) {
	t.Parallel()
	iss := loadIssuer(t, t.TempDir())
	tests := []struct {
		name   string
		sub    string
		ttl    time.Duration
		scopes []string
	}{
		{"empty subject", "", time.Minute, nil},
		{"zero ttl", "u", 0, nil},
		{"negative ttl", "u", -time.Minute, nil},
		{"empty scope", "u", time.Minute, []string{""}},
		{"scope with a space", "u", time.Minute, []string{"a b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if token, err := iss.Token(tt.sub, tt.ttl, tt.scopes...); err == nil || token != "" {
				t.Errorf("Token = %q, %v; want an error", token, err)
			}
		})
	}
}

func TestIssuerKIDIsThumbprint(t *testing.T) {
	t.Parallel()
	iss := loadIssuer(t, t.TempDir())
	var set struct {
		Keys []struct{ KID, X, Y string } `json:"keys"`
	}
	if err := json.Unmarshal(iss.JWKS(), &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("JWKS %s: %v", iss.JWKS(), err)
	}
	// RFC 7638, section 3.2: the hash of the required members, in lexicographic order, without spaces.
	members := `{"crv":"P-256","kty":"EC","x":"` + set.Keys[0].X + `","y":"` + set.Keys[0].Y + `"}`
	sum := sha256.Sum256([]byte(members))
	if want := base64.RawURLEncoding.EncodeToString(sum[:]); set.Keys[0].KID != want {
		t.Errorf("kid = %q, want the thumbprint %q", set.Keys[0].KID, want)
	}
}
