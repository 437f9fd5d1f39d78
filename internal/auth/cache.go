package auth

import (
	"crypto/sha256"
	"slices"
	"sync"
	"time"
)

// maxCacheEntries bounds the verified-token cache of a Verifier.
const maxCacheEntries = 10_000

// tokenKey identifies a token in the cache without keeping the token itself.
type tokenKey [sha256.Size]byte

// tokenCache remembers verified tokens until min(exp, verification time + ttl). It is safe for concurrent
// use.
type tokenCache struct {
	ttl        time.Duration
	maxEntries int

	mu      sync.Mutex
	entries map[tokenKey]cacheEntry
}

type cacheEntry struct {
	principal Principal
	expires   time.Time
}

func newTokenCache(ttl time.Duration, maxEntries int) *tokenCache {
	return &tokenCache{ttl: ttl, maxEntries: maxEntries, entries: make(map[tokenKey]cacheEntry)}
}

// get returns the principal of a token verified earlier, if its entry has not expired at now.
func (c *tokenCache) get(key tokenKey, now time.Time) (Principal, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return Principal{}, false
	}
	if !now.Before(e.expires) {
		delete(c.entries, key)
		return Principal{}, false
	}
	p := e.principal
	p.Scopes = slices.Clone(p.Scopes) // callers may modify their copy
	return p, true
}

// put remembers a principal verified at now. When the cache is full it drops expired entries and then, if
// that is not enough, arbitrary ones down to 90% of the bound, so that a full cache is not swept on every
// put.
func (c *tokenCache) put(key tokenKey, p Principal, now time.Time) {
	expires := p.ExpiresAt
	if limit := now.Add(c.ttl); limit.Before(expires) {
		expires = limit
	}
	if !now.Before(expires) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.maxEntries {
		c.evict(now)
	}
	p.Scopes = slices.Clone(p.Scopes) // the caller keeps p
	c.entries[key] = cacheEntry{principal: p, expires: expires}
}

func (c *tokenCache) evict(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
	if len(c.entries) < c.maxEntries {
		return
	}
	target := c.maxEntries - max(c.maxEntries/10, 1)
	for k := range c.entries { // map order is unspecified: the victims are arbitrary
		if len(c.entries) <= target {
			break
		}
		delete(c.entries, k)
	}
}

// size reports the number of entries, expired or not.
func (c *tokenCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
