package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/budget"
)

// errIdempotencyMismatch is the same Idempotency-Key sent with a different body.
var errIdempotencyMismatch = errors.New("idempotency key reused with a different request")

// idempotency remembers, for 24 hours, which query each user's
// Idempotency-Key created (like Stripe's): the key is claimed with Create
// before anything else happens, so of two identical requests racing, one
// creates the query and the other gets it.
type idempotency struct {
	kv jetstream.KeyValue
}

type idemRecord struct {
	QueryID  string `json:"query_id"`
	BodyHash string `json:"body_hash"`
}

// validIdempotencyKey: 1..255 printable ASCII characters.
func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

func idemKVKey(user, key string) string {
	sum := sha256.Sum256([]byte(key))
	return budget.EncodeUser(user) + "." + hex.EncodeToString(sum[:16])
}

func bodyHash(question string, k int) string {
	sum := sha256.Sum256([]byte(strconv.Itoa(k) + "\x00" + question))
	return hex.EncodeToString(sum[:])
}

// claim binds the key to id. It returns "" when the caller now owns the key
// and must create query id; otherwise the id of the query the key already
// made. A different body under the same key is errIdempotencyMismatch.
func (s *idempotency) claim(ctx context.Context, user, key, id, question string, k int) (string, error) {
	kvKey := idemKVKey(user, key)
	want := idemRecord{QueryID: id, BodyHash: bodyHash(question, k)}
	b, _ := json.Marshal(want)
	for {
		_, err := s.kv.Create(ctx, kvKey, b)
		if err == nil {
			return "", nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", fmt.Errorf("claiming idempotency key: %w", err)
		}
		e, err := s.kv.Get(ctx, kvKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released by a refused first attempt: try again
		}
		if err != nil {
			return "", fmt.Errorf("reading idempotency key: %w", err)
		}
		var got idemRecord
		if err := json.Unmarshal(e.Value(), &got); err != nil {
			return "", fmt.Errorf("decoding idempotency key: %w", err)
		}
		if got.BodyHash != want.BodyHash {
			return "", errIdempotencyMismatch
		}
		return got.QueryID, nil
	}
}

// release forgets a key whose request was refused (rate limit, budget,
// queue down), so that a retry with the same key can succeed later.
func (s *idempotency) release(user, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.kv.Delete(ctx, idemKVKey(user, key)) // the key expires in 24 h anyway
}
