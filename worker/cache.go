package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/query"
)

// answerCache keeps answers to questions already asked, for
// ANSWER_CACHE_TTL, so a repeat costs nothing: the same normalised
// question, with the same k and model, is answered from the bucket.
type answerCache struct {
	kv jetstream.KeyValue // nil: caching is off
}

type cachedAnswer struct {
	Answer  string         `json:"answer"`
	Sources []query.Source `json:"sources"`
	Model   string         `json:"model"`
}

// cacheKey hashes what makes two questions the same: case and spacing do
// not matter, the number of passages and the model do.
func cacheKey(question string, k int, model string) string {
	norm := strings.ToLower(strings.Join(strings.Fields(question), " "))
	sum := sha256.Sum256([]byte(model + "\x00" + strconv.Itoa(k) + "\x00" + norm))
	return hex.EncodeToString(sum[:])
}

func (c answerCache) get(ctx context.Context, key string) (cachedAnswer, bool) {
	if c.kv == nil {
		return cachedAnswer{}, false
	}
	e, err := c.kv.Get(ctx, key)
	if err != nil {
		return cachedAnswer{}, false // a miss, or the cache is unavailable: answer normally
	}
	var a cachedAnswer
	if json.Unmarshal(e.Value(), &a) != nil {
		return cachedAnswer{}, false
	}
	return a, true
}

func (c answerCache) put(ctx context.Context, key string, a cachedAnswer) error {
	if c.kv == nil {
		return nil
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = c.kv.Put(ctx, key, b)
	return err
}

// answersBucket configures the cache's bucket.
func answersBucket(ttl time.Duration, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      "answers",
		Description: "Answers to repeated questions (ANSWER_CACHE_TTL)",
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	}
}
