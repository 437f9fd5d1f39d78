package query

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotFound is returned for an id with no record (never created, or expired).
var ErrNotFound = errors.New("query not found")

// Store keeps records in a key-value bucket, one key per id.
type Store struct {
	kv jetstream.KeyValue
}

// NewStore returns a Store over the "queries" bucket.
func NewStore(kv jetstream.KeyValue) *Store {
	return &Store{kv: kv}
}

// Create stores a new record. It fails if the id already exists.
func (s *Store) Create(ctx context.Context, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding query %s: %w", r.ID, err)
	}
	if _, err := s.kv.Create(ctx, r.ID, b); err != nil {
		return fmt.Errorf("storing query %s: %w", r.ID, err)
	}
	return nil
}

// Get returns the record with the given id, and its revision.
func (s *Store) Get(ctx context.Context, id string) (Record, uint64, error) {
	if !validKey(id) {
		return Record{}, 0, ErrNotFound
	}
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, 0, ErrNotFound
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("reading query %s: %w", id, err)
	}
	r, err := Decode(e.Value())
	if err != nil {
		return Record{}, 0, fmt.Errorf("query %s: %w", id, err)
	}
	return r, e.Revision(), nil
}

// Decode parses a stored record.
func Decode(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("decoding query record: %w", err)
	}
	return r, nil
}

// Update applies change to the record with compare-and-swap, re-reading and
// re-applying it when another writer got there first. If change returns an
// error, nothing is written and that error is returned.
func (s *Store) Update(ctx context.Context, id string, change func(*Record) error) (Record, error) {
	for {
		r, rev, err := s.Get(ctx, id)
		if err != nil {
			return Record{}, err
		}
		if err := change(&r); err != nil {
			return r, err
		}
		b, err := json.Marshal(r)
		if err != nil {
			return Record{}, fmt.Errorf("encoding query %s: %w", id, err)
		}
		_, err = s.kv.Update(ctx, id, b, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return Record{}, fmt.Errorf("updating query %s: %w", id, err)
		}
		return r, nil
	}
}

// validKey reports whether id can be a key: a ULID is 26 characters of
// Crockford base32. Anything else cannot name a record, and must not reach
// the server as a malformed subject.
func validKey(id string) bool {
	if len(id) != 26 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}
