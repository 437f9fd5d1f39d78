package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

const (
	testIssuer   = "https://issuer.test"
	testAudience = "tollgate-api"
)

// signer is a private key with the key ID and algorithm its tokens carry.
type signer struct {
	kid    string
	key    crypto.Signer
	method jwt.SigningMethod
}

func newRSASigner(t *testing.T, kid string) signer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, key: key, method: jwt.SigningMethodRS256}
}

func newECSigner(t *testing.T, kid string) signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, key: key, method: jwt.SigningMethodES256}
}

// as returns the same key used with another key ID or algorithm.
func (s signer) as(kid string, method jwt.SigningMethod) signer {
	s.kid, s.method = kid, method
	return s
}

// sign returns a token with the given claims; an empty kid leaves the kid header out.
func (s signer) sign(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	token := jwt.NewWithClaims(s.method, claims)
	if s.kid != "" {
		token.Header["kid"] = s.kid
	}
	raw, err := token.SignedString(s.key)
	if err != nil {
		t.Fatalf("signing token: %v", err)
	}
	return raw
}

// jwks returns the public JWKS of signers, with their key IDs and without "alg".
func jwks(t *testing.T, signers ...signer) []byte {
	t.Helper()
	set := jwkset.NewMemoryStorage()
	for _, s := range signers {
		jwk, err := jwkset.NewJWKFromKey(s.key.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: s.kid, USE: jwkset.UseSig},
		})
		if err != nil {
			t.Fatalf("building JWK: %v", err)
		}
		if err := set.KeyWrite(t.Context(), jwk); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := set.JSONPublic(t.Context())
	if err != nil {
		t.Fatalf("encoding JWKS: %v", err)
	}
	return raw
}

// claimsAt returns valid claims for a token issued at now, expiring 5 minutes later.
func claimsAt(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss":   testIssuer,
		"aud":   []string{testAudience, "other-api"},
		"sub":   "user-1",
		"iat":   now.Unix(),
		"nbf":   now.Unix(),
		"exp":   now.Add(5 * time.Minute).Unix(),
		"scope": "read write",
	}
}

// with returns a copy of c with the given claims set, or removed when the value is nil.
func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := make(jwt.MapClaims, len(c))
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// jwksServer is an issuer's JWKS endpoint on loopback that counts its requests and can be made to fail.
type jwksServer struct {
	*httptest.Server
	requests atomic.Int64
	failing  atomic.Bool
	body     atomic.Pointer[[]byte]
	// requested receives a value for each request made while a test is waiting on it.
	requested chan struct{}
}

func startJWKSServer(t *testing.T, signers ...signer) *jwksServer {
	t.Helper()
	s := &jwksServer{requested: make(chan struct{})}
	s.serve(t, signers...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		select {
		case s.requested <- struct{}{}:
		default:
		}
		if s.failing.Load() {
			http.Error(w, "unavailable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

// serve makes the server answer with the JWKS of signers from now on.
func (s *jwksServer) serve(t *testing.T, signers ...signer) {
	t.Helper()
	body := jwks(t, signers...)
	s.body.Store(&body)
}

// waitForRequest blocks until the server gets a request that starts after the call.
func (s *jwksServer) waitForRequest(t *testing.T) {
	t.Helper()
	select {
	case <-s.requested:
	case <-time.After(30 * time.Second):
		t.Fatal("no JWKS request within 30s")
	}
}

// options returns Options for verifying tokens against s, with a one-hour limit on fetches for unknown
// key IDs so that tests never depend on the limiter refilling.
func (s *jwksServer) options() Options {
	return Options{
		JWKSURL:            s.URL,
		Issuer:             testIssuer,
		Audience:           testAudience,
		UnknownKIDInterval: time.Hour,
		HTTPClient:         s.Client(),
	}
}

// newTestVerifier returns a Verifier whose background work stops when the test ends.
func newTestVerifier(t *testing.T, opts Options) *Verifier {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v, err := NewVerifier(ctx, opts)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// lockedBuffer is a bytes.Buffer that a logger may write to from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// verifyOK verifies token and fails the test if it is rejected.
func verifyOK(t *testing.T, v *Verifier, token, why string) Principal {
	t.Helper()
	p, err := v.Verify(t.Context(), token)
	if err != nil {
		t.Fatalf("%s: Verify: %v", why, err)
	}
	return p
}

// verifyRejected verifies token and fails the test unless it is rejected with an ErrInvalidToken whose
// message contains reason.
func verifyRejected(t *testing.T, v *Verifier, token, reason string) error {
	t.Helper()
	p, err := v.Verify(t.Context(), token)
	if !errors.Is(err, ErrInvalidToken) || !strings.Contains(fmt.Sprint(err), reason) {
		t.Fatalf("Verify error = %v, want ErrInvalidToken with %q", err, reason)
	}
	if !reflect.DeepEqual(p, Principal{}) {
		t.Errorf("Verify returned %+v with its error", p)
	}
	return err
}
