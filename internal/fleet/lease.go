package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// BucketLeases holds leases: one holder at a time for a decision that
// must be made once across the fleet (an autostop pass for one app in
// one region).
const BucketLeases = "ep-leases"

// leaseRecord is a lease's value: who holds it, until when.
type leaseRecord struct {
	Schema  int       `json:"schema"`
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

// Lease takes or renews the lease key for holder until ttl from now, and
// reports whether holder has it. It is compare-and-set on the key's
// revision: of two nodes asking at once one wins, and a lease whose
// holder stopped renewing it (crashed) is free once it expires.
func (s *Store) Lease(ctx context.Context, key, holder string, ttl time.Duration) (bool, error) {
	kv, err := s.bucket(ctx, BucketLeases)
	if err != nil {
		return false, err
	}
	now := time.Now()
	val, err := json.Marshal(leaseRecord{Schema: Schema, Holder: holder, Expires: now.Add(ttl).UTC()})
	if err != nil {
		return false, err
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		_, err = kv.Create(ctx, key, val)
		return leaseResult(err)
	}
	if err != nil {
		return false, err
	}
	var cur leaseRecord
	if json.Unmarshal(e.Value(), &cur) == nil && cur.Holder != holder && now.Before(cur.Expires) {
		return false, nil // held by another, and alive
	}
	_, err = kv.Update(ctx, key, val, e.Revision())
	return leaseResult(err)
}

// Release gives up lease key if holder has it (a lease held by another
// node, or expired and taken, is left alone).
func (s *Store) Release(ctx context.Context, key, holder string) error {
	kv, err := s.bucket(ctx, BucketLeases)
	if err != nil {
		return err
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var cur leaseRecord
	if json.Unmarshal(e.Value(), &cur) != nil || cur.Holder != holder {
		return nil
	}
	err = kv.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
	if conflict(err) {
		// Renewed or taken since the read: not ours to delete any more.
		return nil
	}
	return err
}

// leaseResult reads a create or update: a revision conflict means another
// node took the lease first, which is an answer, not an error.
func leaseResult(err error) (bool, error) {
	if err == nil {
		return true, nil
	}
	if conflict(err) {
		return false, nil
	}
	return false, err
}

// conflict reports a create or update that lost to another writer: the
// key existed, or its revision moved since it was read.
func conflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence)
}

// StartSubject is where node takes requests to start one of the machines
// it owns.
func StartSubject(node string) string { return "ep.machines.start." + node }

// StartRequest asks a machine's owner to start it.
type StartRequest struct {
	App   string `json:"app"`
	ID    string `json:"id"`
	Token string `json:"token,omitempty"`
}

// StartReply is the owner's answer, once the machine takes work or the
// start failed.
type StartReply struct {
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

// ServeStarts answers start requests for node's machines with start,
// which returns once the machine takes work. Requests carry the admin
// token: a start is an operator's kind of action.
func ServeStarts(nc *nats.Conn, node string, token func() string, start func(ctx context.Context, app, id string) error, timeout time.Duration, log *slog.Logger) (*nats.Subscription, error) {
	return nc.Subscribe(StartSubject(node), func(msg *nats.Msg) {
		go func() {
			var req StartRequest
			var reply StartReply
			switch err := json.Unmarshal(msg.Data, &req); {
			case err != nil:
				reply = StartReply{Code: string(perr.MachineDriverFailed), Error: "bad request: " + err.Error()}
			case !tokenMatches(token(), req.Token):
				reply = StartReply{Code: string(perr.MachineDriverFailed), Error: "not authorized"}
				log.Warn("fleet: start request refused: bad token", "app", req.App, "machine", req.ID)
			default:
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				err := start(ctx, req.App, req.ID)
				cancel()
				if err != nil {
					code := perr.MachineStartFailed
					if pe, ok := perr.As(err); ok {
						code = pe.Code
					}
					reply = StartReply{Code: string(code), Error: err.Error()}
				}
			}
			b, _ := json.Marshal(reply)
			msg.Respond(b)
		}()
	})
}

// RequestStart asks owner to start machine id of app and waits for the
// answer, up to ctx's deadline.
func RequestStart(ctx context.Context, nc *nats.Conn, owner, app, id, token string) error {
	b, _ := json.Marshal(StartRequest{App: app, ID: id, Token: token})
	msg, err := nc.RequestWithContext(ctx, StartSubject(owner), b)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return perr.New(perr.ClientClosed, ctx.Err())
		}
		return perr.New(perr.MachineDriverFailed, fmt.Errorf("asking node %s to start machine %s: %w", owner, id, err))
	}
	var reply StartReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return perr.New(perr.MachineDriverFailed, fmt.Errorf("node %s answered a start with %q", owner, msg.Data))
	}
	if reply.Code != "" {
		return perr.New(perr.Code(reply.Code), fmt.Errorf("node %s: %s", owner, reply.Error))
	}
	return nil
}
