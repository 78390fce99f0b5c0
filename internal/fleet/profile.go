package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// A CPU profile of any node is one command away, over the fleet's NATS:
// no SSH, no admin port reachable from outside. The request names the
// node; the answer comes back in chunks under NATS's payload limit.

const (
	profileSubject = "ep.profile." // + node
	profileChunk   = 256 << 10
	// MaxProfileSeconds bounds one recording.
	MaxProfileSeconds = 120
	hdrChunk          = "Edgeproxy-Chunk"
	hdrChunks         = "Edgeproxy-Chunks"
	hdrError          = "Edgeproxy-Error"
)

// ProfileRequest asks a node for a CPU profile. Token is the node's admin
// token, when it has one: the same authority as its admin API.
type ProfileRequest struct {
	Seconds int    `json:"seconds"`
	Token   string `json:"token,omitempty"`
}

// ServeProfiles answers profile requests for node until the subscription
// is drained. token returns the admin token ("" for none); one profile is
// recorded at a time.
func ServeProfiles(nc *nats.Conn, node string, token func() string, log *slog.Logger) (*nats.Subscription, error) {
	var busy atomic.Bool
	return nc.Subscribe(profileSubject+node, func(m *nats.Msg) {
		if m.Reply == "" {
			return
		}
		var req ProfileRequest
		err := json.Unmarshal(m.Data, &req)
		switch {
		case err != nil:
			err = fmt.Errorf("bad request: %w", err)
		case !tokenMatches(token(), req.Token):
			err = errors.New("unauthorized: the node's admin token is required")
		case req.Seconds < 1 || req.Seconds > MaxProfileSeconds:
			err = fmt.Errorf("seconds must be 1 to %d", MaxProfileSeconds)
		case !busy.CompareAndSwap(false, true):
			err = errors.New("a profile is already being recorded on this node")
		}
		if err != nil {
			replyError(nc, m.Reply, err)
			return
		}
		go func() {
			defer busy.Store(false)
			log.Info("fleet: recording a CPU profile on request", "seconds", req.Seconds)
			data, err := recordCPU(time.Duration(req.Seconds) * time.Second)
			if err != nil {
				replyError(nc, m.Reply, err)
				return
			}
			sendChunks(nc, m.Reply, data)
		}()
	})
}

func tokenMatches(want, got string) bool {
	if want == "" {
		return true // the NATS credentials are the authority
	}
	a, b := sha256.Sum256([]byte(want)), sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// recordCPU records the process's CPU for d.
func recordCPU(d time.Duration) ([]byte, error) {
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		return nil, fmt.Errorf("cannot start a CPU profile (one is being recorded already?): %w", err)
	}
	time.Sleep(d)
	pprof.StopCPUProfile()
	return buf.Bytes(), nil
}

func replyError(nc *nats.Conn, reply string, err error) {
	m := nats.NewMsg(reply)
	m.Header.Set(hdrError, err.Error())
	nc.PublishMsg(m)
}

func sendChunks(nc *nats.Conn, reply string, data []byte) {
	n := max(1, (len(data)+profileChunk-1)/profileChunk)
	for i := range n {
		m := nats.NewMsg(reply)
		m.Header.Set(hdrChunk, strconv.Itoa(i))
		m.Header.Set(hdrChunks, strconv.Itoa(n))
		m.Data = data[min(i*profileChunk, len(data)):min((i+1)*profileChunk, len(data))]
		if err := nc.PublishMsg(m); err != nil {
			return
		}
	}
	nc.Flush()
}

// FetchProfile asks node for a CPU profile of seconds and waits for it.
func FetchProfile(ctx context.Context, nc *nats.Conn, node string, seconds int, token string) ([]byte, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	req, _ := json.Marshal(ProfileRequest{Seconds: seconds, Token: token})
	if err := nc.PublishRequest(profileSubject+node, inbox, req); err != nil {
		return nil, err
	}
	var chunks [][]byte
	got := 0
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if errors.Is(err, nats.ErrNoResponders) {
				return nil, fmt.Errorf("no node %q is listening (edgeproxy fleet nodes lists them)", node)
			}
			if errors.Is(err, context.DeadlineExceeded) && chunks == nil {
				return nil, fmt.Errorf("no answer from node %q (is it in the fleet? edgeproxy fleet nodes lists them)", node)
			}
			return nil, err
		}
		if m.Header.Get("Status") == "503" {
			return nil, fmt.Errorf("no node %q is listening (edgeproxy fleet nodes lists them)", node)
		}
		if e := m.Header.Get(hdrError); e != "" {
			return nil, fmt.Errorf("node %s: %s", node, e)
		}
		i, err1 := strconv.Atoi(m.Header.Get(hdrChunk))
		n, err2 := strconv.Atoi(m.Header.Get(hdrChunks))
		if err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n || n > 4096 {
			return nil, errors.New("malformed profile chunk")
		}
		if chunks == nil {
			chunks = make([][]byte, n)
		}
		if len(chunks) != n || chunks[i] != nil {
			return nil, errors.New("inconsistent profile chunks")
		}
		chunks[i] = m.Data
		if got++; got == n {
			return bytes.Join(chunks, nil), nil
		}
	}
}
