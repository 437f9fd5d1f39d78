package ratelimit

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/gravitycar/tollgate/internal/natstest"
)

func TestKey(t *testing.T) {
	t.Parallel()
	ids := []string{
		"auth0|abc",
		"auth0|ABC",
		"google-oauth2|104365498745612345678",
		"someone@example.com",
		"some.one+tag@example.co.uk",
		"Ünïcödé 用户 🙂",
		"with space",
		"tab\tand\nnewline",
		"a.b.c",
		".leading-dot",
		"trailing-dot.",
		"double..dot",
		"*",
		">",
		"foo.*.bar",
		"$KV.ratelimit.x",
		"a/b=c",
		"\xff\xfe not utf-8",
		"",
		strings.Repeat("x", 128),
		strings.Repeat("x", 129),
		strings.Repeat("y", 129),
		strings.Repeat("x", 10000),
		strings.Repeat("x", 9999) + "y",
		strings.Repeat("é", 100),
	}
	valid := regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)
	kv := connect(t, natstest.StartServer(t))
	ctx := context.Background()

	owner := make(map[string]string, len(ids))
	for _, id := range ids {
		key := Key(id)
		if !valid.MatchString(key) || strings.HasPrefix(key, ".") || strings.HasSuffix(key, ".") || len(key) > 200 {
			t.Errorf("Key(%q) = %q: not a valid, short NATS key", id, key)
			continue
		}
		if Key(id) != key {
			t.Errorf("Key(%q) is not stable", id)
		}
		if other, ok := owner[key]; ok {
			t.Errorf("Key(%q) = Key(%q) = %q", id, other, key)
		}
		owner[key] = id

		// The server accepts it, and it names this id's entry alone.
		if _, err := kv.Put(ctx, key, []byte(id)); err != nil {
			t.Errorf("Put(Key(%q) = %q): %v", id, key, err)
		}
	}
	for key, id := range owner {
		e, err := kv.Get(ctx, key)
		if err != nil {
			t.Errorf("Get(%q): %v", key, err)
			continue
		}
		if string(e.Value()) != id {
			t.Errorf("Get(Key(%q)) = %q", id, e.Value())
		}
	}
}
