package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketTLS holds the fleet's shared TLS state: the session-ticket keys,
// so that a client resumes at any edge behind the same anycast address.
const BucketTLS = "ep-tls"

const ticketKeysKey = "ticket-keys"

// SyncTicketKeys folds the fleet's session-ticket keys into this node's
// and publishes the result: sync gets the fleet's encoded keys (nil when
// there are none yet), merges them, rotates, and returns this node's
// encoded keys, which are written back if they differ. Two edges writing
// at once are told apart by the key's revision: the loser merges the
// winner's keys and tries again.
func (s *Store) SyncTicketKeys(ctx context.Context, sync func(remote []byte) []byte) error {
	kv, err := s.bucket(ctx, BucketTLS)
	if err != nil {
		return err
	}
	for range 5 {
		var remote []byte
		var rev uint64
		e, err := kv.Get(ctx, ticketKeysKey)
		switch {
		case err == nil:
			remote, rev = e.Value(), e.Revision()
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return err
		}
		local := sync(remote)
		if bytes.Equal(local, remote) {
			return nil
		}
		if rev == 0 {
			_, err = kv.Create(ctx, ticketKeysKey, local)
		} else {
			_, err = kv.Update(ctx, ticketKeysKey, local, rev)
		}
		if conflict(err) {
			continue // another edge wrote first: merge its keys too
		}
		return err
	}
	return fmt.Errorf("fleet: session ticket keys: kept losing the race to other edges")
}
