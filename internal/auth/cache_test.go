package auth

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"
)

func TestTokenCacheExpiry(t *testing.T) {
	t.Parallel()
	now := newFakeClock().Now()
	tests := []struct {
		name  string
		ttl   time.Duration
		exp   time.Time
		until time.Time // zero: not cached
	}{
		{"exp before TTL", time.Hour, now.Add(time.Minute), now.Add(time.Minute)},
		{"TTL before exp", time.Minute, now.Add(time.Hour), now.Add(time.Minute)},
		{"already expired", time.Hour, now.Add(-time.Second), time.Time{}},
		{"expiring now", time.Hour, now, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTokenCache(tt.ttl, 10)
			key := tokenKey(sha256.Sum256([]byte(tt.name)))
			c.put(key, Principal{Subject: "s", ExpiresAt: tt.exp}, now)
			if tt.until.IsZero() {
				if n := c.size(); n != 0 {
					t.Errorf("size = %d, want 0: the entry must not be cached", n)
				}
				return
			}
			if _, ok := c.get(key, tt.until.Add(-time.Nanosecond)); !ok {
				t.Errorf("not cached just before %v", tt.until)
			}
			if _, ok := c.get(key, tt.until); ok {
				t.Errorf("still cached at %v", tt.until)
			}
			if n := c.size(); n != 0 {
				t.Errorf("size = %d, want 0: an expired entry is dropped when found", n)
			}
		})
	}
}

func TestTokenCacheBounded(t *testing.T) {
	t.Parallel()
	const limit = 100
	clock := newFakeClock()
	c := newTokenCache(time.Hour, limit)
	key := func(i int) tokenKey { return tokenKey(sha256.Sum256(fmt.Appendf(nil, "token-%d", i))) }
	put := func(i int, exp time.Duration) {
		c.put(key(i), Principal{Subject: fmt.Sprint(i), ExpiresAt: clock.Now().Add(exp)}, clock.Now())
	}

	for i := range limit {
		exp := time.Hour
		if i%2 == 0 {
			exp = time.Minute
		}
		put(i, exp)
	}
	if n := c.size(); n != limit {
		t.Fatalf("size = %d, want %d", n, limit)
	}

	clock.Advance(2 * time.Minute)
	put(limit, time.Hour)
	if n := c.size(); n != limit/2+1 {
		t.Errorf("size = %d, want %d: only the expired entries are evicted while that makes room", n, limit/2+1)
	}
	for i := 1; i < limit; i += 2 {
		if _, ok := c.get(key(i), clock.Now()); !ok {
			t.Fatalf("unexpired entry %d was evicted", i)
		}
	}

	for i := limit + 1; i < 10*limit; i++ {
		put(i, time.Hour)
		if n := c.size(); n > limit {
			t.Fatalf("size = %d, over the bound %d", n, limit)
		}
	}
	if p, ok := c.get(key(10*limit-1), clock.Now()); !ok || p.Subject != fmt.Sprint(10*limit-1) {
		t.Errorf("newest entry = %+v, %v; want it cached", p, ok)
	}
}
