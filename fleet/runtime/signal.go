package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Etcd is the part of the etcd client the bot side of the protocol needs:
// reads at a revision, transactions, watches and leases.
// *clientv3.Client satisfies it.
type Etcd interface {
	clientv3.KV
	clientv3.Watcher
	clientv3.Lease
}

var _ Etcd = (*clientv3.Client)(nil)

// AckTTL is how long acknowledgements are kept (their lease).
const AckTTL = 7 * 24 * time.Hour

// SignallerConfig holds what a Signaller needs. Etcd and Secret are
// required; every other field has a default.
type SignallerConfig struct {
	Etcd   Etcd
	Prefix string
	// Secret is RUNTIME_SECRET, the HMAC key of the HTTP protocol.
	Secret     []byte
	HTTPClient *http.Client
	// AckTimeout is ABORT_ACK_TIMEOUT: how long after the signal WaitAcks
	// waits for acknowledgements (default 10s). It also bounds the
	// deliveries of the signal to HTTP instances.
	AckTimeout time.Duration
	// AttemptTimeout bounds one POST of the signal (default 3s, at most
	// AckTimeout), so one hung connection does not use the whole budget.
	AttemptTimeout time.Duration
	// Concurrency bounds the signal deliveries in flight (default 32).
	Concurrency int
	Logger      *zap.Logger
	// Now returns the current time: it signs requests and stamps acks.
	// Timeouts use the monotonic clock regardless.
	Now func() time.Time
}

// Signaller tells the runtime instances that a route was rolled back and
// collects their acknowledgements. It is safe for concurrent use.
type Signaller struct {
	cfg  SignallerConfig
	keys Keys
	log  *zap.Logger
}

// NewSignaller checks cfg and fills in defaults.
func NewSignaller(cfg SignallerConfig) (*Signaller, error) {
	if cfg.Etcd == nil {
		return nil, fmt.Errorf("%w: signaller needs an etcd client", ErrInvalid)
	}
	if len(cfg.Secret) == 0 {
		return nil, fmt.Errorf("%w: signaller needs RUNTIME_SECRET", ErrInvalid)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 3 * time.Second
	}
	if cfg.AttemptTimeout > cfg.AckTimeout {
		cfg.AttemptTimeout = cfg.AckTimeout
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Signaller{cfg: cfg, keys: Keys{Prefix: cfg.Prefix}, log: cfg.Logger.Named("runtime-signal")}, nil
}

// Expected is one runtime instance a signal waits for.
type Expected struct {
	ID string
	// URL is where the signal was POSTed; empty for SDK instances, which
	// watch etcd and write their own acknowledgement.
	URL string
}

// Signal is a rollback signal on its way. Pass it to WaitAcks.
type Signal struct {
	Op          string
	Route       string
	Epoch       int64
	From        string
	ActiveAfter string
	FlipRev     int64
	// SentAt is when SignalRollback started (Now).
	SentAt time.Time
	// Expected are the instances registered at FlipRev-1, sorted by id.
	Expected []Expected
	// ReadRev is the revision the instances were read at: FlipRev-1, or the
	// current revision when FlipRev-1 was compacted (then Compacted is true
	// and instances that registered after the flip may be waited for too).
	ReadRev   int64
	Compacted bool

	start      time.Time // monotonic
	deliveries *deliveries
}

// deliveries tracks the POSTs of one signal to HTTP instances.
type deliveries struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	errs   map[string]error
}

func (d *deliveries) fail(id string, err error) {
	d.mu.Lock()
	d.errs[id] = err
	d.mu.Unlock()
}

// stop cancels the deliveries still running and waits for them to return.
func (d *deliveries) stop() map[string]string {
	if d == nil {
		return nil
	}
	d.cancel()
	<-d.done
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.errs) == 0 {
		return nil
	}
	out := make(map[string]string, len(d.errs))
	for id, err := range d.errs {
		out[id] = err.Error()
	}
	return out
}

// SignalRollback signals the rollback of route (from → activeAfter, at
// epoch, committed at flipRev by op) to every runtime instance registered
// at flipRev-1. Instances with a URL get the signed AbortSignal POSTed in
// the background (bounded, retried with capped backoff within AckTimeout);
// the bot writes their acknowledgement from the reply. SDK instances watch
// etcd and acknowledge themselves. It returns once the instances are read
// and the deliveries started; ctx also bounds the deliveries. Always call
// WaitAcks with the returned Signal: it stops the deliveries.
func (s *Signaller) SignalRollback(ctx context.Context, op, route string, epoch int64, from, activeAfter string, flipRev int64) (Signal, error) {
	sig := Signal{Op: op, Route: route, Epoch: epoch, From: from, ActiveAfter: activeAfter, FlipRev: flipRev, SentAt: s.cfg.Now(), start: time.Now()}
	body := AbortSignal{Op: op, Route: route, Epoch: epoch, ActiveAfter: activeAfter, From: from}
	if err := body.Validate(); err != nil {
		return sig, fmt.Errorf("signal rollback of %s: %w", route, err)
	}
	if flipRev < 2 {
		return sig, fmt.Errorf("%w: signal rollback of %s: flip revision %d", ErrInvalid, route, flipRev)
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return sig, fmt.Errorf("signal rollback of %s: %w", route, err)
	}

	resp, err := s.cfg.Etcd.Get(ctx, s.keys.Instances(), clientv3.WithPrefix(), clientv3.WithRev(flipRev-1))
	sig.ReadRev = flipRev - 1
	if errors.Is(err, rpctypes.ErrCompacted) {
		// The flip's revision is already compacted (a long-delayed signal):
		// the current registrations are the best approximation left.
		s.log.Warn("instances at the flip revision are compacted; waiting for the current registrations instead",
			zap.String("op", op), zap.Int64("flip_rev", flipRev))
		sig.Compacted = true
		resp, err = s.cfg.Etcd.Get(ctx, s.keys.Instances(), clientv3.WithPrefix())
		if err == nil {
			sig.ReadRev = resp.Header.Revision
		}
	}
	if err != nil {
		return sig, fmt.Errorf("signal rollback of %s: read runtime instances: %w", route, err)
	}
	for _, kv := range resp.Kvs {
		id := strings.TrimPrefix(string(kv.Key), s.keys.Instances())
		var rec InstanceRecord
		if derr := Decode(kv.Value, &rec); derr != nil || rec.ID != id {
			// Waited for by id all the same: it is registered, so it may be
			// serving requests; its missing ack will say so.
			s.log.Warn("malformed runtime instance record", zap.String("key", string(kv.Key)), zap.Error(derr))
			if ValidateInstance(id) != nil {
				continue
			}
			rec = InstanceRecord{ID: id}
		}
		sig.Expected = append(sig.Expected, Expected{ID: id, URL: rec.URL})
	}
	sort.Slice(sig.Expected, func(i, j int) bool { return sig.Expected[i].ID < sig.Expected[j].ID })

	var targets []Expected
	for _, e := range sig.Expected {
		if e.URL != "" {
			targets = append(targets, e)
		}
	}
	if len(targets) == 0 {
		return sig, nil
	}
	lease, err := s.cfg.Etcd.Grant(ctx, int64(AckTTL/time.Second))
	if err != nil {
		return sig, fmt.Errorf("signal rollback of %s: grant ack lease: %w", route, err)
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.AckTimeout)
	d := &deliveries{cancel: cancel, done: make(chan struct{}), errs: map[string]error{}}
	sig.deliveries = d
	work := make(chan Expected)
	var wg sync.WaitGroup
	for i := 0; i < min(s.cfg.Concurrency, len(targets)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				if err := s.deliver(dctx, sig, e, payload, lease.ID); err != nil {
					d.fail(e.ID, err)
					s.log.Warn("abort signal not delivered", zap.String("op", op), zap.String("instance", e.ID), zap.Error(err))
				}
			}
		}()
	}
	go func() {
		defer close(d.done)
		defer cancel()
	feed:
		for _, e := range targets {
			select {
			case work <- e:
			case <-dctx.Done():
				break feed
			}
		}
		close(work)
		wg.Wait()
	}()
	return sig, nil
}

// errPermanent marks a delivery failure that a retry cannot fix.
type errPermanent struct{ error }

func (e errPermanent) Unwrap() error { return e.error }

// deliver POSTs the signal to one instance until it answers or the budget
// is spent, then writes the instance's acknowledgement.
func (s *Signaller) deliver(ctx context.Context, sig Signal, e Expected, payload []byte, lease clientv3.LeaseID) error {
	var reply AbortReply
	err := retry(ctx, func(ctx context.Context, ts int64) error {
		actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
		defer cancel()
		var err error
		reply, err = s.post(actx, strings.TrimSuffix(e.URL, "/")+AbortPath, ts, payload)
		return err
	}, s.cfg.Now)
	if err != nil {
		return err
	}
	rec := AckRecord{InFlight: reply.InFlight, Aborted: reply.Aborted, AppliedRev: sig.FlipRev, At: s.cfg.Now().UTC()}
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	key := s.keys.Ack(sig.Op, e.ID)
	// Created only if absent: an instance that also writes its own ack
	// (an SDK instance with a URL) keeps its own, more precise, record.
	_, err = s.cfg.Etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(lease))).
		Commit()
	if err != nil {
		return fmt.Errorf("write ack of %s: %w", e.ID, err)
	}
	return nil
}

// post sends one signed signal and decodes the reply.
func (s *Signaller) post(ctx context.Context, url string, ts int64, payload []byte) (AbortReply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return AbortReply{}, errPermanent{err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderTimestamp, fmt.Sprint(ts))
	req.Header.Set(HeaderSignature, Sign(s.cfg.Secret, ts, payload))
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return AbortReply{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes+1))
	if err != nil {
		return AbortReply{}, fmt.Errorf("read reply: %w", err)
	}
	if err := statusError(resp.StatusCode); err != nil {
		return AbortReply{}, err
	}
	var reply AbortReply
	if err := Decode(data, &reply); err != nil {
		return AbortReply{}, errPermanent{fmt.Errorf("reply: %w", err)}
	}
	return reply, nil
}

// statusError maps an HTTP status to nil (2xx), a permanent error (4xx but
// 408 and 429) or a retryable one.
func statusError(code int) error {
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests:
		return fmt.Errorf("status %d", code)
	case code >= 400 && code < 500:
		return errPermanent{fmt.Errorf("status %d", code)}
	default:
		return fmt.Errorf("status %d", code)
	}
}

// Backoff bounds of retried protocol requests.
const (
	backoffMin = 50 * time.Millisecond
	backoffMax = time.Second
)

// retry calls f until it succeeds, fails permanently or ctx ends, backing
// off exponentially (capped). Each attempt gets a fresh timestamp, strictly
// greater than the previous attempt's: a receiver refuses a (timestamp,
// signature) pair it has seen, and a retry of the same body within the same
// second would otherwise look like a replay.
func retry(ctx context.Context, f func(ctx context.Context, ts int64) error, now func() time.Time) error {
	var last int64
	wait := backoffMin
	for attempt := 1; ; attempt++ {
		ts := now().Unix()
		if ts <= last {
			ts = last + 1
		}
		last = ts
		err := f(ctx, ts)
		if err == nil {
			return nil
		}
		var perm errPermanent
		if errors.As(err, &perm) {
			return perm.error
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("after %d attempts: %w (%v)", attempt, err, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(2*wait, backoffMax)
	}
}

// Result is the outcome of one signal.
type Result struct {
	Expected int
	// Acked counts expected instances that acknowledged (an ack record
	// exists); Complete is true when every expected instance acknowledged,
	// reported its re-issues (or aborted nothing) or vanished.
	Acked    int
	Complete bool
	InFlight int
	Aborted  int
	Reissued int
	// Missing are expected instances with no acknowledgement when the wait
	// ended; PendingReissue acknowledged but had not reported re-issues.
	Missing        []string
	PendingReissue []string
	// Vanished are expected instances whose registration disappeared (lease
	// expiry) without an acknowledgement.
	Vanished []string
	// Drain is the time from the signal to the last acknowledgement or
	// re-issue report observed.
	Drain time.Duration
	// DeliveryErrors says why the signal did not reach an HTTP instance.
	DeliveryErrors map[string]string
}

// ackState is what WaitAcks knows about one expected instance.
type ackState struct {
	ack      *AckRecord
	vanished bool
}

func (a ackState) done() bool {
	if a.ack != nil {
		return a.ack.Aborted == 0 || a.ack.Reissued != nil
	}
	return a.vanished
}

// WaitAcks waits until every instance sig expects has acknowledged (and
// reported its re-issues) or vanished, or until AckTimeout after the signal
// passes, whichever is first; it never waits longer. A timeout is not an
// error: the Result lists who is missing. It returns an error only when
// etcd fails or ctx ends, with what was known so far.
func (s *Signaller) WaitAcks(ctx context.Context, sig Signal) (res Result, err error) {
	res.Expected = len(sig.Expected)
	defer func() { res.DeliveryErrors = sig.deliveries.stop() }()
	ctx, cancel := context.WithDeadline(ctx, sig.start.Add(s.cfg.AckTimeout))
	defer cancel()

	states := make(map[string]*ackState, len(sig.Expected))
	for _, e := range sig.Expected {
		states[e.ID] = &ackState{}
	}
	var last time.Time
	pending := len(states)
	update := func(id string, f func(*ackState)) {
		st, ok := states[id]
		if !ok {
			return
		}
		was := st.done()
		f(st)
		if st.done() != was {
			if was {
				pending++
			} else {
				pending--
			}
		}
		last = time.Now()
	}
	applyAck := func(key string, val []byte) {
		id := strings.TrimPrefix(key, s.keys.Acks(sig.Op))
		var rec AckRecord
		// Decoded strictly and validated like every other value a runtime
		// writes (FuzzAckTotals): a malformed ack is not counted.
		if err := Decode(val, &rec); err != nil {
			s.log.Warn("malformed runtime ack", zap.String("key", key), zap.Error(err))
			return
		}
		update(id, func(st *ackState) { st.ack = &rec })
	}
	finish := func(err error) (Result, error) {
		ids := make([]string, 0, len(states))
		for id := range states {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			st := states[id]
			switch {
			case st.ack != nil:
				res.Acked++
				res.InFlight += st.ack.InFlight
				res.Aborted += st.ack.Aborted
				if st.ack.Reissued != nil {
					res.Reissued += *st.ack.Reissued
				} else if st.ack.Aborted > 0 {
					res.PendingReissue = append(res.PendingReissue, id)
				}
			case st.vanished:
				res.Vanished = append(res.Vanished, id)
			default:
				res.Missing = append(res.Missing, id)
			}
		}
		res.Complete = pending == 0
		if !last.IsZero() {
			res.Drain = last.Sub(sig.start)
		}
		return res, err
	}
	if pending == 0 {
		return finish(nil)
	}

	// Acks and registrations read at one revision, then watched from the next.
	tresp, err := s.cfg.Etcd.Txn(ctx).Then(
		clientv3.OpGet(s.keys.Acks(sig.Op), clientv3.WithPrefix()),
		clientv3.OpGet(s.keys.Instances(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return finish(s.waitErr(ctx, sig, fmt.Errorf("read acks: %w", err)))
	}
	for _, kv := range tresp.Responses[0].GetResponseRange().Kvs {
		applyAck(string(kv.Key), kv.Value)
	}
	registered := map[string]bool{}
	for _, kv := range tresp.Responses[1].GetResponseRange().Kvs {
		registered[strings.TrimPrefix(string(kv.Key), s.keys.Instances())] = true
	}
	for id := range states {
		if !registered[id] {
			update(id, func(st *ackState) { st.vanished = true })
		}
	}
	if pending == 0 {
		return finish(nil)
	}

	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	rev := tresp.Header.Revision + 1
	acks := s.cfg.Etcd.Watch(wctx, s.keys.Acks(sig.Op), clientv3.WithPrefix(), clientv3.WithRev(rev))
	insts := s.cfg.Etcd.Watch(wctx, s.keys.Instances(), clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithFilterPut())
	for pending > 0 {
		select {
		case <-ctx.Done():
			return finish(s.waitErr(ctx, sig, nil))
		case wr, ok := <-acks:
			if !ok || wr.Err() != nil {
				return finish(s.waitErr(ctx, sig, fmt.Errorf("watch acks: %v", wr.Err())))
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut {
					applyAck(string(ev.Kv.Key), ev.Kv.Value)
				}
			}
		case wr, ok := <-insts:
			if !ok || wr.Err() != nil {
				return finish(s.waitErr(ctx, sig, fmt.Errorf("watch instances: %v", wr.Err())))
			}
			for _, ev := range wr.Events {
				id := strings.TrimPrefix(string(ev.Kv.Key), s.keys.Instances())
				if st, ok := states[id]; ok && st.ack == nil {
					update(id, func(st *ackState) { st.vanished = true })
				}
			}
		}
	}
	return finish(nil)
}

// waitErr turns the end of a wait into its error: nil when the ack timeout
// passed (the Result says who is missing), else the cause.
func (s *Signaller) waitErr(ctx context.Context, sig Signal, err error) error {
	if ctx.Err() != nil && !time.Now().Before(sig.start.Add(s.cfg.AckTimeout)) {
		s.log.Info("ack timeout passed", zap.String("op", sig.Op), zap.Duration("ack_timeout", s.cfg.AckTimeout))
		return nil
	}
	if err == nil {
		err = context.Cause(ctx)
	}
	return fmt.Errorf("wait acks of %s: %w", sig.Op, err)
}
