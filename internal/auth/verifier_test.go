package auth

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestVerifyAccepts(t *testing.T) {
	t.Parallel()
	rsaKey, ecKey := newRSASigner(t, "rsa-1"), newECSigner(t, "ec-1")
	srv := startJWKSServer(t, rsaKey, ecKey)
	v := newTestVerifier(t, srv.options())
	now := time.Now()
	valid := claimsAt(now)
	exp := time.Unix(now.Add(5*time.Minute).Unix(), 0)
	readWrite := []string{"read", "write"}

	tests := []struct {
		name  string
		token string
		want  Principal
	}{
		{
			name:  "RS256",
			token: rsaKey.sign(t, valid),
			want:  Principal{Subject: "user-1", Scopes: readWrite, ExpiresAt: exp},
		},
		{
			name:  "ES256",
			token: ecKey.sign(t, with(valid, "sub", "user-2")),
			want:  Principal{Subject: "user-2", Scopes: readWrite, ExpiresAt: exp},
		},
		{
			name:  "PS256 with the RSA key",
			token: rsaKey.as("rsa-1", jwt.SigningMethodPS256).sign(t, valid),
			want:  Principal{Subject: "user-1", Scopes: readWrite, ExpiresAt: exp},
		},
		{
			name:  "no kid header",
			token: ecKey.as("", jwt.SigningMethodES256).sign(t, valid),
			want:  Principal{Subject: "user-1", Scopes: readWrite, ExpiresAt: exp},
		},
		{
			name:  "audience as a single string",
			token: rsaKey.sign(t, with(valid, "aud", testAudience)),
			want:  Principal{Subject: "user-1", Scopes: readWrite, ExpiresAt: exp},
		},
		{
			name:  "expired within the leeway",
			token: rsaKey.sign(t, with(valid, "exp", now.Add(-10*time.Second).Unix())),
			want:  Principal{Subject: "user-1", Scopes: readWrite, ExpiresAt: time.Unix(now.Add(-10*time.Second).Unix(), 0)},
		},
		{
			name:  "scope and scp merged",
			token: rsaKey.sign(t, with(valid, "scope", "read", "scp", []string{"admin", "read"})),
			want:  Principal{Subject: "user-1", Scopes: []string{"read", "admin"}, ExpiresAt: exp},
		},
		{
			name:  "scp as a string",
			token: rsaKey.sign(t, with(valid, "scope", nil, "scp", "a b")),
			want:  Principal{Subject: "user-1", Scopes: []string{"a", "b"}, ExpiresAt: exp},
		},
		{
			name:  "no scopes",
			token: rsaKey.sign(t, with(valid, "scope", nil)),
			want:  Principal{Subject: "user-1", ExpiresAt: exp},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := verifyOK(t, v, tt.token, "valid token")
			if got.Subject != tt.want.Subject || !slices.Equal(got.Scopes, tt.want.Scopes) || !got.ExpiresAt.Equal(tt.want.ExpiresAt) {
				t.Errorf("Verify = %+v, want %+v", got, tt.want)
			}
			for _, s := range tt.want.Scopes {
				if !got.HasScope(s) {
					t.Errorf("HasScope(%q) = false", s)
				}
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	rsaKey, ecKey := newRSASigner(t, "rsa-1"), newECSigner(t, "ec-1")
	srv := startJWKSServer(t, rsaKey, ecKey)
	v := newTestVerifier(t, srv.options())
	valid := claimsAt(time.Now())
	later := time.Now().Add(2 * time.Minute).Unix() // beyond the default leeway of 30s

	none := jwt.NewWithClaims(jwt.SigningMethodNone, valid)
	none.Header["kid"] = "rsa-1"
	noneToken, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	pubDER, err := x509.MarshalPKIXPublicKey(rsaKey.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hmac := jwt.NewWithClaims(jwt.SigningMethodHS256, valid)
	hmac.Header["kid"] = "rsa-1"
	hmacToken, err := hmac.SignedString(pubPEM)
	if err != nil {
		t.Fatal(err)
	}

	impostorRSA, impostorEC := newRSASigner(t, "rsa-1"), newECSigner(t, "ec-1")

	tests := []struct {
		name   string
		token  string
		reason string
	}{
		{"alg none", noneToken, "invalid signature"},
		{"HS256 with the RSA public key PEM as secret", hmacToken, "invalid signature"},
		{"RSA key not in the JWKS with a known kid", impostorRSA.sign(t, valid), "invalid signature"},
		{"EC key not in the JWKS with a known kid", impostorEC.sign(t, valid), "invalid signature"},
		{"payload swapped under a valid signature", swapPayload(rsaKey.sign(t, valid), rsaKey.sign(t, with(valid, "sub", "admin"))), "invalid signature"},
		{"key not in the JWKS without kid", impostorEC.as("", jwt.SigningMethodES256).sign(t, valid), "invalid signature"},
		{"EC signature with the kid of the RSA key", ecKey.as("rsa-1", jwt.SigningMethodES256).sign(t, valid), "invalid signature"},
		{"unknown kid", impostorEC.as("ec-2", jwt.SigningMethodES256).sign(t, valid), "no usable key"},
		{"expired", rsaKey.sign(t, with(valid, "exp", time.Now().Add(-2*time.Minute).Unix())), "token expired"},
		{"not yet valid", rsaKey.sign(t, with(valid, "nbf", later)), "token not valid yet"},
		{"issued in the future", rsaKey.sign(t, with(valid, "iat", later)), "token issued in the future"},
		{"missing exp", rsaKey.sign(t, with(valid, "exp", nil)), "missing required claim"},
		{"wrong iss", rsaKey.sign(t, with(valid, "iss", "https://evil.test")), "wrong issuer"},
		{"missing iss", rsaKey.sign(t, with(valid, "iss", nil)), "missing required claim"},
		{"wrong aud", rsaKey.sign(t, with(valid, "aud", []string{"other-api"})), "wrong audience"},
		{"missing aud", rsaKey.sign(t, with(valid, "aud", nil)), "missing required claim"},
		{"missing sub", rsaKey.sign(t, with(valid, "sub", nil)), "missing sub"},
		{"empty sub", rsaKey.sign(t, with(valid, "sub", "")), "missing sub"},
		{"scope of the wrong type", rsaKey.sign(t, with(valid, "scope", 42)), "malformed token"},
		{"empty", "", "missing token"},
		{"garbage", "garbage", "malformed token"},
		{"three garbage parts", "a.b.c", "malformed token"},
		{"empty parts", "..", "malformed token"},
		{"header only", "eyJhbGciOiJSUzI1NiJ9..", "malformed token"},
		{"huge", strings.Repeat("a", maxTokenBytes+1), "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verifyRejected(t, v, tt.token, tt.reason)
		})
	}
}

// swapPayload returns token with the payload of other.
func swapPayload(token, other string) string {
	parts, otherParts := strings.Split(token, "."), strings.Split(other, ".")
	parts[1] = otherParts[1]
	return strings.Join(parts, ".")
}

func TestVerifyFetchesJWKSForNewKID(t *testing.T) {
	t.Parallel()
	oldKey, newKey, newerKey := newRSASigner(t, "2024"), newECSigner(t, "2025"), newECSigner(t, "2026")
	srv := startJWKSServer(t, oldKey)
	v := newTestVerifier(t, srv.options())
	if n := srv.requests.Load(); n != 1 {
		t.Fatalf("NewVerifier made %d JWKS requests, want 1", n)
	}

	srv.serve(t, oldKey, newKey) // the issuer rotates keys
	verifyOK(t, v, newKey.sign(t, claimsAt(time.Now())), "a token with a new kid makes the verifier fetch the JWKS again")
	verifyOK(t, v, oldKey.sign(t, claimsAt(time.Now())), "the old key is still in the JWKS")

	srv.serve(t, newKey, newerKey)
	verifyRejected(t, v, newerKey.sign(t, claimsAt(time.Now())), "no usable key")
	if n := srv.requests.Load(); n != 2 {
		t.Errorf("JWKS requests = %d, want 2: a second fetch within UnknownKIDInterval must be refused", n)
	}
}

func TestVerifyLimitsFetchesForUnknownKIDs(t *testing.T) {
	t.Parallel()
	rsaKey, ecKey := newRSASigner(t, "rsa-1"), newECSigner(t, "ec-1")
	srv := startJWKSServer(t, rsaKey, ecKey)
	v := newTestVerifier(t, srv.options())

	stranger := newECSigner(t, "")
	tokens := make([]string, 50)
	for i := range tokens {
		tokens[i] = stranger.as(fmt.Sprintf("unknown-%d", i), jwt.SigningMethodES256).sign(t, claimsAt(time.Now()))
	}
	errs := make([]error, len(tokens))
	var wg sync.WaitGroup
	for i, token := range tokens {
		wg.Go(func() { _, errs[i] = v.Verify(t.Context(), token) })
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("token %d: Verify error = %v, want ErrInvalidToken", i, err)
		}
	}
	for _, token := range tokens { // and once more, one after the other
		verifyRejected(t, v, token, "no usable key")
	}

	if n := srv.requests.Load(); n != 2 {
		t.Errorf("JWKS requests = %d, want 2: the first fetch and at most one per UnknownKIDInterval", n)
	}
	verifyOK(t, v, rsaKey.sign(t, claimsAt(time.Now())), "known keys keep working")
}

func TestVerifyKeepsKeysDuringJWKSOutage(t *testing.T) {
	t.Parallel()
	for _, outage := range []struct {
		name  string
		start func(*jwksServer)
	}{
		{"server errors", func(s *jwksServer) { s.failing.Store(true) }},
		{"server gone", func(s *jwksServer) { s.Close() }},
	} {
		t.Run(outage.name, func(t *testing.T) {
			t.Parallel()
			rsaKey, ecKey := newRSASigner(t, "rsa-1"), newECSigner(t, "ec-1")
			srv := startJWKSServer(t, rsaKey, ecKey)
			v := newTestVerifier(t, srv.options()) // no cache: every Verify checks a signature
			verifyOK(t, v, rsaKey.sign(t, claimsAt(time.Now())), "before the outage")

			outage.start(srv)
			// A failed fetch for an unknown kid must not drop the keys fetched before.
			verifyRejected(t, v, newECSigner(t, "ec-9").sign(t, claimsAt(time.Now())), "no usable key")
			for _, s := range []signer{rsaKey, ecKey} {
				verifyOK(t, v, s.sign(t, with(claimsAt(time.Now()), "sub", "new-"+s.kid)), "a new token during the outage")
			}
		})
	}
}

func TestNewVerifierToleratesUnreachableJWKS(t *testing.T) {
	t.Parallel()
	key := newECSigner(t, "ec-1")

	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		srv := startJWKSServer(t, key)
		srv.Close()
		var logs lockedBuffer
		opts := srv.options()
		opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		newTestVerifier(t, opts)
		if !strings.Contains(logs.String(), `level=WARN msg="fetching JWKS failed`) {
			t.Errorf("no warning logged; logs:\n%s", logs.String())
		}
	})

	t.Run("keys fetched when the endpoint recovers", func(t *testing.T) {
		t.Parallel()
		srv := startJWKSServer(t, key)
		srv.failing.Store(true)
		var logs lockedBuffer
		opts := srv.options()
		opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		v := newTestVerifier(t, opts)
		if !strings.Contains(logs.String(), `level=WARN msg="fetching JWKS failed`) {
			t.Errorf("no warning logged; logs:\n%s", logs.String())
		}

		srv.failing.Store(false)
		verifyOK(t, v, key.sign(t, claimsAt(time.Now())), "the first unknown kid after the outage fetches the JWKS")
		if n := srv.requests.Load(); n != 2 {
			t.Errorf("JWKS requests = %d, want 2", n)
		}
	})

	t.Run("background refresh", func(t *testing.T) {
		t.Parallel()
		srv := startJWKSServer(t, key)
		srv.failing.Store(true)
		opts := srv.options()
		opts.RefreshInterval = time.Millisecond
		v := newTestVerifier(t, opts)
		// Spend the one fetch for unknown kids allowed per hour, so that only the background refresh is
		// left to get the keys.
		verifyRejected(t, v, key.sign(t, claimsAt(time.Now())), "no usable key")

		srv.failing.Store(false)
		// Refreshes run one after another: once a second one reaches the server, the first, which began
		// after the endpoint recovered, has stored the keys.
		srv.waitForRequest(t)
		srv.waitForRequest(t)
		verifyOK(t, v, key.sign(t, with(claimsAt(time.Now()), "sub", "user-2")), "after a background refresh")
	})
}

func TestNewVerifierRejectsBadOptions(t *testing.T) {
	t.Parallel()
	valid := Options{JWKSURL: "https://issuer.test/jwks", Issuer: testIssuer, Audience: testAudience}
	tests := []struct {
		name   string
		change func(*Options)
		want   string
	}{
		{"no issuer", func(o *Options) { o.Issuer = "" }, "issuer is required"},
		{"no audience", func(o *Options) { o.Audience = "" }, "audience is required"},
		{"no JWKS", func(o *Options) { o.JWKSURL = "" }, "JWKS URL"},
		{"relative JWKS URL", func(o *Options) { o.JWKSURL = "/jwks" }, "JWKS URL"},
		{"JWKS URL of another scheme", func(o *Options) { o.JWKSURL = "file:///etc/jwks" }, "JWKS URL"},
		{"negative cache TTL", func(o *Options) { o.CacheTTL = -time.Second }, "negative"},
		{"negative leeway", func(o *Options) { o.Leeway = -time.Second }, "negative"},
		{"static JWKS not JSON", func(o *Options) { o.JWKSJSON = []byte("{") }, "static JWKS"},
		{"static JWKS without keys", func(o *Options) { o.JWKSJSON = []byte(`{"keys":[]}`) }, "no usable keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := valid
			tt.change(&opts)
			v, err := NewVerifier(t.Context(), opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || v != nil {
				t.Errorf("NewVerifier = %v, %v; want nil and an error with %q", v, err, tt.want)
			}
		})
	}
}

func TestVerifyCache(t *testing.T) {
	t.Parallel()

	// setup returns a verifier on a fake clock with the given cache TTL, a token signed by a key of its
	// JWKS, and a function that retires that key: the JWKS then holds only a new key, which a token with
	// the new kid makes the verifier fetch.
	setup := func(t *testing.T, ttl time.Duration, claims func(now time.Time) jwt.MapClaims) (v *Verifier, clock *fakeClock, token string, retire func()) {
		clock = newFakeClock()
		oldKey, newKey := newECSigner(t, "old"), newECSigner(t, "new")
		srv := startJWKSServer(t, oldKey)
		opts := srv.options()
		opts.CacheTTL = ttl
		opts.Now = clock.Now
		v = newTestVerifier(t, opts)
		token = oldKey.sign(t, claims(clock.Now()))
		retire = func() {
			srv.serve(t, newKey)
			verifyOK(t, v, newKey.sign(t, claimsAt(clock.Now())), "a token with the new key")
			verifyRejected(t, v, oldKey.sign(t, with(claimsAt(clock.Now()), "sub", "uncached")), "no usable key")
		}
		return v, clock, token, retire
	}

	t.Run("verified token served from cache", func(t *testing.T) {
		t.Parallel()
		v, clock, token, retire := setup(t, time.Hour, claimsAt)
		first := verifyOK(t, v, token, "first use")
		first.Scopes[0] = "mutated"

		retire()
		clock.Advance(4 * time.Minute)
		got := verifyOK(t, v, token, "cached, although its key is gone")
		if want := []string{"read", "write"}; !slices.Equal(got.Scopes, want) {
			t.Errorf("Scopes = %q, want %q: callers must not change the cached principal", got.Scopes, want)
		}
	})

	t.Run("cached token rejected once expired", func(t *testing.T) {
		t.Parallel()
		v, clock, token, _ := setup(t, time.Hour, claimsAt) // exp in 5 minutes
		verifyOK(t, v, token, "first use")

		clock.Advance(5*time.Minute + defaultLeeway + time.Second)
		err := verifyRejected(t, v, token, "token expired")
		if !errors.Is(err, jwt.ErrTokenExpired) {
			t.Errorf("error %v does not wrap jwt.ErrTokenExpired", err)
		}
	})

	t.Run("TTL shorter than exp re-verifies", func(t *testing.T) {
		t.Parallel()
		hour := func(now time.Time) jwt.MapClaims { return with(claimsAt(now), "exp", now.Add(time.Hour).Unix()) }
		v, clock, token, retire := setup(t, time.Minute, hour)
		verifyOK(t, v, token, "first use")

		retire()
		clock.Advance(59 * time.Second)
		verifyOK(t, v, token, "still cached")
		clock.Advance(time.Second)
		verifyRejected(t, v, token, "no usable key") // verified again, against a JWKS without its key
	})

	t.Run("disabled", func(t *testing.T) {
		t.Parallel()
		v, _, token, retire := setup(t, 0, claimsAt)
		verifyOK(t, v, token, "first use")
		retire()
		verifyRejected(t, v, token, "no usable key")
	})
}
