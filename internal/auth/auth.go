// Package auth authenticates API callers by their OAuth2 bearer tokens.
//
// A [Verifier] checks JWTs locally against the issuer's JSON Web Key Set (JWKS): the signature with an
// allow-list of asymmetric algorithms, then exp, nbf, iat, iss, aud and sub. Keys are fetched once at start
// and refreshed in the background; a token signed with an unknown key ID triggers at most one extra fetch
// per interval, and keys already fetched keep working while the JWKS endpoint is down. Verified tokens
// may be cached briefly, keyed by their SHA-256 hash.
//
// For local development, an [Issuer] mints tokens with a key kept in the data directory, and its
// [Issuer.JWKS] feeds a Verifier through [Options.JWKSJSON].
package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrInvalidToken is wrapped by every error that rejects a token or an Authorization header; the wrapping
// error says why.
var ErrInvalidToken = errors.New("invalid token")

// Principal is the authenticated caller of a verified token.
type Principal struct {
	// Subject is the token's sub claim; never empty.
	Subject string
	// Scopes are the token's scopes, from the scope claim (a space-separated string) and the scp claim
	// (an array or a space-separated string), without duplicates.
	Scopes []string
	// ExpiresAt is the token's exp claim.
	ExpiresAt time.Time
}

// HasScope reports whether the principal was granted scope s.
func (p Principal) HasScope(s string) bool {
	return slices.Contains(p.Scopes, s)
}

// ParseBearer returns the token of an Authorization header value of the form "Bearer <token>"; the scheme
// is case-insensitive.
func ParseBearer(header string) (string, error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return "", fmt.Errorf("%w: missing bearer token", ErrInvalidToken)
	}
	scheme, token, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: malformed authorization header", ErrInvalidToken)
	}
	token = strings.TrimLeft(token, " ")
	if token == "" {
		return "", fmt.Errorf("%w: missing bearer token", ErrInvalidToken)
	}
	if !isB64Token(token) {
		return "", fmt.Errorf("%w: malformed authorization header", ErrInvalidToken)
	}
	return token, nil
}

// isB64Token reports whether s matches the b64token syntax of RFC 6750, section 2.1:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for _, c := range []byte(body) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}
