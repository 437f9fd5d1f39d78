package auth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// Defaults for the zero values of Options.
const (
	defaultLeeway             = 30 * time.Second
	defaultRefreshInterval    = time.Hour
	defaultUnknownKIDInterval = 5 * time.Minute
)

// maxTokenBytes bounds the size of a token Verify will look at.
const maxTokenBytes = 16 << 10

// Options configure a Verifier.
type Options struct {
	// JWKSURL is the issuer's JWKS endpoint. It is required unless JWKSJSON is given.
	JWKSURL string
	// JWKSJSON is a static JWKS, such as [Issuer.JWKS]; when non-nil it is used instead of JWKSURL.
	JWKSJSON []byte
	// Issuer is the required value of the iss claim.
	Issuer string
	// Audience must be one of the values of the aud claim. It is required.
	Audience string
	// CacheTTL is how long a verified token is remembered, and never past its exp; 0 disables the cache.
	CacheTTL time.Duration
	// Leeway is the clock skew allowed when checking exp, nbf and iat; 30s if zero.
	Leeway time.Duration
	// RefreshInterval is how often the JWKS is fetched in the background; 1h if zero.
	RefreshInterval time.Duration
	// UnknownKIDInterval is the least time between two JWKS fetches caused by tokens with an unknown key
	// ID; 5m if zero. A token that would need a fetch sooner is rejected at once.
	UnknownKIDInterval time.Duration
	// HTTPClient fetches the JWKS; http.DefaultClient if nil.
	HTTPClient *http.Client
	// Now is the clock for the cache and for the time-based claims; time.Now if nil.
	Now func() time.Time
	// Logger receives warnings about failed JWKS fetches; discarded if nil.
	Logger *slog.Logger
}

// withDefaults validates o and fills in the defaults of its zero fields.
func (o Options) withDefaults() (Options, error) {
	switch {
	case o.Issuer == "":
		return o, errors.New("issuer is required")
	case o.Audience == "":
		return o, errors.New("audience is required")
	case o.CacheTTL < 0, o.Leeway < 0, o.RefreshInterval < 0, o.UnknownKIDInterval < 0:
		return o, errors.New("durations must not be negative")
	}
	if o.JWKSJSON == nil {
		u, err := url.Parse(o.JWKSURL)
		if err != nil {
			return o, fmt.Errorf("JWKS URL: %w", err)
		}
		if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return o, fmt.Errorf("JWKS URL %q: want an absolute http(s) URL", o.JWKSURL)
		}
	}
	if o.Leeway == 0 {
		o.Leeway = defaultLeeway
	}
	if o.RefreshInterval == 0 {
		o.RefreshInterval = defaultRefreshInterval
	}
	if o.UnknownKIDInterval == 0 {
		o.UnknownKIDInterval = defaultUnknownKIDInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// Verifier verifies bearer JWTs against an issuer's JWKS. It is safe for concurrent use.
type Verifier struct {
	keys   keyfunc.Keyfunc
	parser *jwt.Parser
	cache  *tokenCache // nil when disabled
	now    func() time.Time
}

// NewVerifier returns a Verifier configured by opts. With a JWKSURL, it fetches the JWKS before returning
// (waiting at most 10s) and then every opts.RefreshInterval until ctx is done. If the endpoint cannot be
// reached it logs a warning and returns anyway; the keys are then fetched for the first token with a key
// ID (within the UnknownKIDInterval limit) or by the next background refresh. It fails only when opts
// are invalid.
func NewVerifier(ctx context.Context, opts Options) (*Verifier, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("auth options: %w", err)
	}
	var keys keyfunc.Keyfunc
	if opts.JWKSJSON != nil {
		keys, err = newStaticKeyfunc(ctx, opts.JWKSJSON)
	} else {
		keys, err = newRemoteKeyfunc(ctx, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("auth options: %w", err)
	}
	v := &Verifier{
		keys: keys,
		parser: jwt.NewParser(
			// Only asymmetric algorithms: never "none", and never HMAC, which would let a public key
			// serve as a shared secret.
			jwt.WithValidMethods([]string{
				"RS256", "RS384", "RS512",
				"PS256", "PS384", "PS512",
				"ES256", "ES384", "ES512",
				"EdDSA",
			}),
			jwt.WithIssuer(opts.Issuer),
			jwt.WithAudience(opts.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(opts.Leeway),
			jwt.WithTimeFunc(opts.Now),
		),
		now: opts.Now,
	}
	if opts.CacheTTL > 0 {
		v.cache = newTokenCache(opts.CacheTTL, maxCacheEntries)
	}
	return v, nil
}

// Verify returns the principal of a raw JWT after checking its signature, exp (required), nbf and iat
// (if present), iss, aud and sub (required). A token whose key ID is not in the JWKS makes Verify fetch
// the JWKS again, within ctx, unless that happened less than opts.UnknownKIDInterval ago. Every error
// wraps ErrInvalidToken.
func (v *Verifier) Verify(ctx context.Context, raw string) (Principal, error) {
	switch {
	case raw == "":
		return Principal{}, fmt.Errorf("%w: missing token", ErrInvalidToken)
	case len(raw) > maxTokenBytes:
		return Principal{}, fmt.Errorf("%w: token longer than %d bytes", ErrInvalidToken, maxTokenBytes)
	}
	key := tokenKey(sha256.Sum256([]byte(raw)))
	now := v.now()
	if v.cache != nil {
		if p, ok := v.cache.get(key, now); ok {
			return p, nil
		}
	}

	var c claims
	if _, err := v.parser.ParseWithClaims(raw, &c, v.keys.KeyfuncCtx(ctx)); err != nil {
		return Principal{}, rejection(err)
	}
	if c.Subject == "" {
		return Principal{}, fmt.Errorf("%w: missing sub claim", ErrInvalidToken)
	}
	p := Principal{Subject: c.Subject, Scopes: c.scopes(), ExpiresAt: c.ExpiresAt.Time}
	if v.cache != nil {
		v.cache.put(key, p, now)
	}
	return p, nil
}

// rejection wraps a jwt parsing error in ErrInvalidToken with a short reason.
func rejection(err error) error {
	reason := "verification failed"
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		reason = "malformed token"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		reason = "no usable key"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		reason = "invalid signature"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		reason = "missing required claim"
	case errors.Is(err, jwt.ErrTokenExpired):
		reason = "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		reason = "token not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		reason = "token issued in the future"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		reason = "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		reason = "wrong audience"
	}
	return fmt.Errorf("%w: %s: %w", ErrInvalidToken, reason, err)
}

// claims are the JWT claims Verify reads.
type claims struct {
	jwt.RegisteredClaims
	Scope scopeClaim `json:"scope"`
	Scp   scopeClaim `json:"scp"`
}

// scopes merges the scope and scp claims, without duplicates.
func (c claims) scopes() []string {
	var all []string
	for _, s := range slices.Concat(c.Scope, c.Scp) {
		if !slices.Contains(all, s) {
			all = append(all, s)
		}
	}
	return all
}

// scopeClaim decodes a scope claim written either as a space-separated string (RFC 8693 "scope") or as
// an array of strings (the "scp" of several issuers).
type scopeClaim []string

// UnmarshalJSON implements json.Unmarshaler.
func (s *scopeClaim) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		*s = strings.Fields(str)
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("scope claim is neither a string nor an array of strings: %w", err)
	}
	*s = list
	return nil
}
