package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// HandlerConfig configures the bot's runtime endpoints (POST
// /v1/runtime/heartbeat and POST /v1/runtime/acks). Etcd and Secret are
// required.
type HandlerConfig struct {
	Etcd   HandlerEtcd
	Prefix string
	// Secret is RUNTIME_SECRET.
	Secret []byte
	// Replay remembers accepted requests; one is made when nil. Handlers may
	// share one.
	Replay *ReplayCache
	// InstanceTTL is the lease of an instance registered by heartbeat
	// (default 30s): a runtime heartbeats more often than that.
	InstanceTTL time.Duration
	// MaxInstances bounds the instances registered by heartbeat that the
	// handler tracks leases for (default 10000).
	MaxInstances int
	// Timeout bounds the etcd work of one request (default 5s).
	Timeout time.Duration
	Logger  *zap.Logger
	Now     func() time.Time
}

// HandlerEtcd is the part of the etcd client the handlers need.
type HandlerEtcd interface {
	clientv3.KV
	clientv3.Lease
}

func (c *HandlerConfig) setDefaults(name string) error {
	if c.Etcd == nil {
		return fmt.Errorf("%w: %s handler needs an etcd client", ErrInvalid, name)
	}
	if len(c.Secret) == 0 {
		return fmt.Errorf("%w: %s handler needs RUNTIME_SECRET", ErrInvalid, name)
	}
	if c.Replay == nil {
		c.Replay = NewReplayCache(0)
	}
	if c.InstanceTTL <= 0 {
		c.InstanceTTL = 30 * time.Second
	}
	if c.MaxInstances <= 0 {
		c.MaxInstances = 10_000
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// readVerified reads and authenticates a protocol request. On failure it
// answers (405, 413, 401 without detail, or 503) and returns false; the
// detail goes to the log only.
func readVerified(w http.ResponseWriter, r *http.Request, secret []byte, now time.Time, replay *ReplayCache, log *zap.Logger) ([]byte, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return nil, false
	}
	body, err := ReadSigned(r, secret, now)
	if err == nil {
		err = replay.Check(now, r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature))
	}
	switch {
	case err == nil:
		return body, true
	case errors.Is(err, ErrInvalid):
		log.Warn("runtime request too large", zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
	case errors.Is(err, errReplayFull):
		log.Error("replay cache full; refusing runtime requests until entries expire", zap.String("path", r.URL.Path))
		http.Error(w, "busy", http.StatusServiceUnavailable)
	case errors.Is(err, ErrUnsigned), errors.Is(err, ErrBadSignature), errors.Is(err, ErrStale), errors.Is(err, ErrReplayed):
		log.Warn("runtime request refused", zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr), zap.Error(err))
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	default:
		log.Warn("runtime request unreadable", zap.String("path", r.URL.Path), zap.Error(err))
		http.Error(w, "bad request", http.StatusBadRequest)
	}
	return nil, false
}

// HeartbeatHandler serves POST /v1/runtime/heartbeat: a signed
// InstanceRecord is put at runtime/instances/<id> under a lease of
// InstanceTTL, which every heartbeat refreshes.
type HeartbeatHandler struct {
	cfg  HandlerConfig
	keys Keys
	log  *zap.Logger

	mu        sync.Mutex
	leases    map[string]heartbeatLease
	lastSweep time.Time
}

type heartbeatLease struct {
	id   clientv3.LeaseID
	seen time.Time // monotonic
}

// NewHeartbeatHandler checks cfg and returns the handler.
func NewHeartbeatHandler(cfg HandlerConfig) (*HeartbeatHandler, error) {
	if err := cfg.setDefaults("heartbeat"); err != nil {
		return nil, err
	}
	return &HeartbeatHandler{cfg: cfg, keys: Keys{Prefix: cfg.Prefix}, log: cfg.Logger.Named("runtime-heartbeat"),
		leases: map[string]heartbeatLease{}, lastSweep: time.Now()}, nil
}

func (h *HeartbeatHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, ok := readVerified(w, r, h.cfg.Secret, h.cfg.Now(), h.cfg.Replay, h.log)
	if !ok {
		return
	}
	var rec InstanceRecord
	if err := Decode(body, &rec); err != nil {
		h.log.Warn("bad heartbeat", zap.Error(err))
		http.Error(w, "invalid instance record", http.StatusBadRequest)
		return
	}
	val, err := json.Marshal(rec)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	if err := h.register(ctx, rec.ID, string(val)); err != nil {
		if errors.Is(err, errReplayFull) {
			h.log.Error("too many runtime instances registered by heartbeat", zap.Int("max", h.cfg.MaxInstances))
		} else {
			h.log.Error("heartbeat not stored", zap.String("instance", rec.ID), zap.Error(err))
		}
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// register puts the record under the instance's lease, refreshing the
// lease, or under a new one when the instance is new or its lease expired.
// Two concurrent first heartbeats of one instance may each grant a lease;
// the loser's lease holds nothing and expires.
func (h *HeartbeatHandler) register(ctx context.Context, id, val string) error {
	key := h.keys.Instance(id)
	if l, ok := h.lease(id); ok {
		_, err := h.cfg.Etcd.Put(ctx, key, val, clientv3.WithLease(l))
		if err == nil {
			_, err = h.cfg.Etcd.KeepAliveOnce(ctx, l)
		}
		if err == nil {
			h.remember(id, l)
			return nil
		}
		if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return err
		}
		h.forget(id)
	}
	if !h.room(id) {
		return errReplayFull
	}
	g, err := h.cfg.Etcd.Grant(ctx, int64(h.cfg.InstanceTTL/time.Second))
	if err != nil {
		return fmt.Errorf("grant instance lease: %w", err)
	}
	if _, err := h.cfg.Etcd.Put(ctx, key, val, clientv3.WithLease(g.ID)); err != nil {
		return err
	}
	h.remember(id, g.ID)
	return nil
}

func (h *HeartbeatHandler) lease(id string) (clientv3.LeaseID, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.leases[id]
	return l.id, ok
}

func (h *HeartbeatHandler) remember(id string, l clientv3.LeaseID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.leases[id] = heartbeatLease{id: l, seen: time.Now()}
}

func (h *HeartbeatHandler) forget(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.leases, id)
}

// room drops the leases not refreshed for a TTL (they have expired in
// etcd) at most once per TTL, and reports whether a new instance fits.
func (h *HeartbeatHandler) room(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now := time.Now(); now.Sub(h.lastSweep) >= h.cfg.InstanceTTL || len(h.leases) >= h.cfg.MaxInstances {
		for k, l := range h.leases {
			if now.Sub(l.seen) >= h.cfg.InstanceTTL {
				delete(h.leases, k)
			}
		}
		h.lastSweep = now
	}
	_, known := h.leases[id]
	return known || len(h.leases) < h.cfg.MaxInstances
}

// Tracked reports how many instance leases the handler holds.
func (h *HeartbeatHandler) Tracked() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.leases)
}

// AcksHandler serves POST /v1/runtime/acks: a signed AckReport sets the
// Reissued count of the instance's existing acknowledgement (404 when there
// is none yet: the runtime retries). Repeating a report is harmless.
type AcksHandler struct {
	cfg  HandlerConfig
	keys Keys
	log  *zap.Logger
}

// NewAcksHandler checks cfg and returns the handler.
func NewAcksHandler(cfg HandlerConfig) (*AcksHandler, error) {
	if err := cfg.setDefaults("acks"); err != nil {
		return nil, err
	}
	return &AcksHandler{cfg: cfg, keys: Keys{Prefix: cfg.Prefix}, log: cfg.Logger.Named("runtime-acks")}, nil
}

func (h *AcksHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, ok := readVerified(w, r, h.cfg.Secret, h.cfg.Now(), h.cfg.Replay, h.log)
	if !ok {
		return
	}
	var rep AckReport
	if err := Decode(body, &rep); err != nil {
		h.log.Warn("bad ack report", zap.Error(err))
		http.Error(w, "invalid ack report", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	status, err := h.setReissued(ctx, rep)
	if err != nil {
		h.log.Warn("ack report not applied", zap.String("op", rep.Op), zap.String("instance", rep.Instance), zap.Int("status", status), zap.Error(err))
		http.Error(w, http.StatusText(status), status)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// setReissued updates the ack with a transaction on its ModRevision,
// retried a few times if another writer got there first.
func (h *AcksHandler) setReissued(ctx context.Context, rep AckReport) (int, error) {
	key := h.keys.Ack(rep.Op, rep.Instance)
	for attempt := 0; attempt < 5; attempt++ {
		resp, err := h.cfg.Etcd.Get(ctx, key)
		if err != nil {
			return http.StatusServiceUnavailable, err
		}
		if len(resp.Kvs) == 0 {
			return http.StatusNotFound, errors.New("no acknowledgement for this op and instance")
		}
		kv := resp.Kvs[0]
		var rec AckRecord
		// Strict and validated, as WaitAcks reads it (FuzzAckTotals).
		if err := Decode(kv.Value, &rec); err != nil {
			return http.StatusConflict, fmt.Errorf("stored ack unusable: %w", err)
		}
		if rep.Reissued > rec.Aborted {
			return http.StatusBadRequest, fmt.Errorf("reissued %d but aborted %d", rep.Reissued, rec.Aborted)
		}
		if rec.Reissued != nil && *rec.Reissued == rep.Reissued {
			return http.StatusNoContent, nil
		}
		n := rep.Reissued
		rec.Reissued = &n
		val, err := json.Marshal(rec)
		if err != nil {
			return http.StatusInternalServerError, err
		}
		tr, err := h.cfg.Etcd.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
			Then(clientv3.OpPut(key, string(val), clientv3.WithIgnoreLease())).
			Commit()
		if err != nil {
			return http.StatusServiceUnavailable, err
		}
		if tr.Succeeded {
			return http.StatusNoContent, nil
		}
	}
	return http.StatusServiceUnavailable, errors.New("ack kept changing")
}
