package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"golang.org/x/time/rate"
)

// fetchTimeout bounds each JWKS fetch: the first one, the periodic ones and those for unknown key IDs.
const fetchTimeout = 10 * time.Second

// newStaticKeyfunc returns a keyfunc over the keys of a fixed JWKS.
func newStaticKeyfunc(ctx context.Context, raw []byte) (keyfunc.Keyfunc, error) {
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("decoding static JWKS: %w", err)
	}
	store, err := set.ToStorage()
	if err != nil {
		return nil, fmt.Errorf("loading static JWKS: %w", err)
	}
	keys, err := store.KeyReadAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading static JWKS: %w", err)
	}
	if len(keys) == 0 {
		return nil, errors.New("loading static JWKS: no usable keys")
	}
	return newKeyfunc(ctx, store)
}

// newRemoteKeyfunc returns a keyfunc over the keys of opts.JWKSURL. The JWKS is fetched before it returns,
// then every opts.RefreshInterval until ctx is done, and again for a token with an unknown key ID, at most
// once per opts.UnknownKIDInterval. A failed fetch is logged and keeps the keys fetched before.
func newRemoteKeyfunc(ctx context.Context, opts Options) (keyfunc.Keyfunc, error) {
	logFetchError := func(ctx context.Context, err error) {
		opts.Logger.WarnContext(ctx, "fetching JWKS failed; keeping the keys fetched before",
			slog.String("url", opts.JWKSURL), slog.Any("error", err))
	}
	fetched, err := jwkset.NewStorageFromHTTP(opts.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client:                    opts.HTTPClient,
		Ctx:                       ctx,
		HTTPTimeout:               fetchTimeout,
		NoErrorReturnFirstHTTPReq: true,
		RefreshErrorHandler:       logFetchError,
		RefreshInterval:           opts.RefreshInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("creating JWKS storage: %w", err)
	}
	// The client fetches the JWKS again on every unknown key ID; unknownKIDLimiter decides when it may.
	refetching, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{opts.JWKSURL: fetched},
		RateLimitWaitMax:  fetchTimeout, // jwkset bounds the fetch with this too
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("creating JWKS client: %w", err)
	}
	store := unknownKIDLimiter{
		Storage: refetching,
		fetched: fetched,
		limiter: rate.NewLimiter(rate.Every(opts.UnknownKIDInterval), 1),
	}
	return newKeyfunc(ctx, store)
}

// newKeyfunc returns a keyfunc over the signing keys of store: those whose JWK "use" is "sig" or absent.
func newKeyfunc(ctx context.Context, store jwkset.Storage) (keyfunc.Keyfunc, error) {
	kf, err := keyfunc.New(keyfunc.Options{
		Ctx:          ctx,
		Storage:      store,
		UseWhitelist: []jwkset.USE{jwkset.UseSig, ""},
	})
	if err != nil {
		return nil, fmt.Errorf("creating keyfunc: %w", err)
	}
	return kf, nil
}

// unknownKIDLimiter is a JWKS storage that fetches the JWKS again when asked for an unknown key ID, at
// most as often as its limiter allows. jwkset's own RefreshUnknownKID limiter makes such callers wait
// for their turn (up to a minute by default, one interval per caller in line); here a caller who would
// have to wait is told at once that the key is unknown.
type unknownKIDLimiter struct {
	jwkset.Storage                // fetches the JWKS again on each KeyRead of an unknown key ID
	fetched        jwkset.Storage // the keys of the last successful fetch
	limiter        *rate.Limiter
}

// KeyRead implements jwkset.Storage.
func (s unknownKIDLimiter) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	jwk, err := s.fetched.KeyRead(ctx, kid)
	if !errors.Is(err, jwkset.ErrKeyNotFound) {
		return jwk, err
	}
	if !s.limiter.Allow() {
		return jwkset.JWK{}, fmt.Errorf("%w (JWKS fetched less than an interval ago)", err)
	}
	return s.Storage.KeyRead(ctx, kid)
}
