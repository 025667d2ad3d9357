package routing

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// KV is the part of the etcd client the Store needs.
type KV interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
	Txn(ctx context.Context) clientv3.Txn
}

var _ KV = (*clientv3.Client)(nil)

// Store changes routes in etcd. It is safe for concurrent use.
type Store struct {
	kv   KV
	keys Keyspace
	log  *zap.Logger
	// Now returns the current time; it stamps the At field of each change.
	Now func() time.Time
	// RereadTimeout bounds the re-read after a flip whose outcome is unknown.
	RereadTimeout time.Duration
}

// NewStore returns a Store over kv with keys under prefix.
func NewStore(kv KV, prefix string, log *zap.Logger) *Store {
	if log == nil {
		log = zap.NewNop()
	}
	return &Store{kv: kv, keys: Keyspace{Prefix: prefix}, log: log, Now: time.Now, RereadTimeout: 3 * time.Second}
}

// Keys returns the keyspace the store writes under.
func (s *Store) Keys() Keyspace { return s.keys }

// Entry is a route's config with the etcd revisions it was read at.
type Entry struct {
	Config RouteConfig
	// ModRevision is the revision of the last write to the route's key:
	// the value to pass as ExpectRev to change it.
	ModRevision int64
}

// Get reads one route (linearizable). It returns ErrNotFound when the route
// has no config and a *MalformedError when the stored value is unusable.
func (s *Store) Get(ctx context.Context, route string) (Entry, error) {
	if err := ValidateRoute(route); err != nil {
		return Entry{}, err
	}
	key := s.keys.Route(route)
	resp, err := s.kv.Get(ctx, key)
	if err != nil {
		return Entry{}, fmt.Errorf("read route %s: %w", route, err)
	}
	if len(resp.Kvs) == 0 {
		return Entry{}, fmt.Errorf("route %s: %w", route, ErrNotFound)
	}
	kv := resp.Kvs[0]
	cfg, err := DecodeRouteConfig(key, kv.Value, route)
	if err != nil {
		return Entry{}, err
	}
	return Entry{Config: cfg, ModRevision: kv.ModRevision}, nil
}

// List reads every route at one revision. Malformed values are returned
// separately so one hand-edited key does not hide the others.
func (s *Store) List(ctx context.Context) (routes []Entry, malformed []error, rev int64, err error) {
	resp, err := s.kv.Get(ctx, s.keys.Routes(), clientv3.WithPrefix())
	if err != nil {
		return nil, nil, 0, fmt.Errorf("list routes: %w", err)
	}
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		name, ok := s.keys.routeFromKey(key)
		if !ok {
			malformed = append(malformed, &MalformedError{Key: key, Err: errors.New("not a route key")})
			continue
		}
		cfg, err := DecodeRouteConfig(key, kv.Value, name)
		if err != nil {
			malformed = append(malformed, err)
			continue
		}
		routes = append(routes, Entry{Config: cfg, ModRevision: kv.ModRevision})
	}
	return routes, malformed, resp.Header.Revision, nil
}

// Change asks for one route to move to a version.
type Change struct {
	Route string
	Kind  Kind
	// To is the version the route moves to.
	To string
	// ExpectRev is the route key's ModRevision the operator saw. Zero means
	// the route must not exist yet (only a promote may create a route).
	ExpectRev int64
	// Seen, if set, is the entry the caller read with Get; ExpectRev must
	// equal its ModRevision. Flip then computes the new config from it
	// instead of reading the route again, so the flip is one round trip;
	// the transaction's revision guard still refuses it if the route has
	// moved since.
	Seen *Entry
	// Op is the id of the operation making the change; it is recorded in the
	// config and lets a re-read recognise the caller's own write.
	Op     string
	Reason string
	Actor  string
	// Cmps are extra conditions of the transaction (for example an
	// idempotency key's CreateRevision == 0). If one fails nothing is
	// written and Flip returns ErrGuard.
	Cmps []clientv3.Cmp
	// Ops are extra writes committed in the same transaction as the route
	// (op record, idempotency key, audit outbox).
	Ops []clientv3.Op
}

// Result describes a change that landed.
type Result struct {
	Config RouteConfig
	// Revision is the etcd revision of the transaction (the route's new
	// ModRevision).
	Revision int64
	// Previous is the config the change replaced (zero when it created the route).
	Previous RouteConfig
	// Reread is true when the transaction's reply was lost and a re-read
	// found the write had landed.
	Reread bool
}

// Promote moves a route to a new version (or creates it, with ExpectRev 0).
// In-flight requests are not aborted by a promotion.
func (s *Store) Promote(ctx context.Context, ch Change) (Result, error) {
	ch.Kind = KindPromote
	return s.Flip(ctx, ch)
}

// Flip applies ch in one etcd transaction guarded by the route's
// ModRevision == ch.ExpectRev, together with ch.Ops. Exactly one of several
// concurrent flips with the same ExpectRev wins; the others get a
// *ConflictError with the current config.
//
// If the transaction times out or the connection drops, Flip does not retry:
// it re-reads the route and reports success if its own op landed, a conflict
// if another did, and the original error if the route is unchanged (then it
// is safe to call Flip again with the same ExpectRev and Op: if the first
// attempt lands late, the second sees it as its own).
func (s *Store) Flip(ctx context.Context, ch Change) (Result, error) {
	if err := s.checkChange(ch); err != nil {
		return Result{}, err
	}
	key := s.keys.Route(ch.Route)
	var prev RouteConfig
	exists := ch.ExpectRev != 0
	if ch.Seen != nil {
		prev, exists = ch.Seen.Config, true
	} else if exists {
		cur, err := s.Get(ctx, ch.Route)
		switch {
		case errors.Is(err, ErrNotFound):
			return Result{}, &ConflictError{Route: ch.Route, ExpectedRev: ch.ExpectRev}
		case err != nil:
			return Result{}, err
		}
		if cur.ModRevision != ch.ExpectRev {
			if cur.Config.Op == ch.Op {
				// A retry of a flip that already landed: report it, do not flip again.
				return Result{Config: cur.Config, Revision: cur.ModRevision, Reread: true}, nil
			}
			return Result{}, &ConflictError{Route: ch.Route, ExpectedRev: ch.ExpectRev, CurrentRev: cur.ModRevision, Current: cur.Config, Exists: true}
		}
		prev = cur.Config
	} else if ch.Kind != KindPromote {
		return Result{}, fmt.Errorf("%w: a %s needs an existing route and its revision", ErrInvalid, ch.Kind)
	}
	next, err := s.next(prev, exists, ch)
	if err != nil {
		return Result{}, err
	}
	val, err := next.Encode()
	if err != nil {
		return Result{}, err
	}

	cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", ch.ExpectRev)}, ch.Cmps...)
	ops := append([]clientv3.Op{clientv3.OpPut(key, string(val))}, ch.Ops...)
	resp, err := s.kv.Txn(ctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return s.reread(ctx, ch, prev, err)
	}
	if resp.Succeeded {
		return Result{Config: next, Revision: resp.Header.Revision, Previous: prev}, nil
	}
	// The Else branch read the route at the revision the compare failed.
	rng := resp.Responses[0].GetResponseRange()
	if rng == nil || len(rng.Kvs) == 0 {
		if exists {
			return Result{}, &ConflictError{Route: ch.Route, ExpectedRev: ch.ExpectRev}
		}
		return Result{}, fmt.Errorf("flip %s to %s: %w", ch.Route, ch.To, ErrGuard)
	}
	kv := rng.Kvs[0]
	if kv.ModRevision == ch.ExpectRev {
		return Result{}, fmt.Errorf("flip %s to %s: %w", ch.Route, ch.To, ErrGuard)
	}
	cur, derr := DecodeRouteConfig(key, kv.Value, ch.Route)
	if derr != nil {
		return Result{}, fmt.Errorf("flip %s to %s: route changed to an unusable value: %w", ch.Route, ch.To, derr)
	}
	if cur.Op == ch.Op {
		// A retry of a flip that already landed (the route was created or
		// moved by this very op): report it, do not flip again.
		return Result{Config: cur, Revision: kv.ModRevision, Reread: true}, nil
	}
	return Result{}, &ConflictError{Route: ch.Route, ExpectedRev: ch.ExpectRev, CurrentRev: kv.ModRevision, Current: cur, Exists: true}
}

// checkChange validates everything about ch that does not need etcd.
func (s *Store) checkChange(ch Change) error {
	if err := ValidateRoute(ch.Route); err != nil {
		return err
	}
	if err := ValidateVersion(ch.To); err != nil {
		return err
	}
	if !ch.Kind.Valid() {
		return fmt.Errorf("%w: kind %q", ErrInvalid, ch.Kind)
	}
	if err := ValidateOpID(ch.Op); err != nil {
		return err
	}
	if ch.ExpectRev < 0 {
		return fmt.Errorf("%w: expected revision %d is negative", ErrInvalid, ch.ExpectRev)
	}
	if ch.Seen != nil {
		if ch.Seen.ModRevision <= 0 || ch.ExpectRev != ch.Seen.ModRevision {
			return fmt.Errorf("%w: expected revision %d does not match the entry seen at revision %d", ErrInvalid, ch.ExpectRev, ch.Seen.ModRevision)
		}
		if ch.Seen.Config.Route != ch.Route {
			return fmt.Errorf("%w: entry seen is for route %q, not %q", ErrInvalid, ch.Seen.Config.Route, ch.Route)
		}
	}
	if len(ch.Reason) > MaxReasonLen {
		return fmt.Errorf("%w: reason is %d bytes, at most %d allowed", ErrInvalid, len(ch.Reason), MaxReasonLen)
	}
	if len(ch.Actor) > MaxActorLen {
		return fmt.Errorf("%w: actor is %d bytes, at most %d allowed", ErrInvalid, len(ch.Actor), MaxActorLen)
	}
	return nil
}

// next computes the config after ch is applied to prev.
func (s *Store) next(prev RouteConfig, exists bool, ch Change) (RouteConfig, error) {
	if exists && prev.Active == ch.To {
		return RouteConfig{}, fmt.Errorf("route %s is on %s: %w", ch.Route, ch.To, ErrNoChange)
	}
	next := RouteConfig{
		Route:  ch.Route,
		Active: ch.To,
		Kind:   ch.Kind,
		Epoch:  1,
		Op:     ch.Op,
		Reason: ch.Reason,
		Actor:  ch.Actor,
		At:     s.Now().UTC(),
	}
	if exists {
		next.From = prev.Active
		next.Previous = prev.Active
		next.Epoch = prev.Epoch + 1
	}
	return next, nil
}

// reread runs after a transaction error: the write may have landed even
// though the reply was lost. It never writes.
func (s *Store) reread(ctx context.Context, ch Change, prev RouteConfig, txnErr error) (Result, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.RereadTimeout)
	defer cancel()
	cur, err := s.Get(rctx, ch.Route)
	switch {
	case errors.Is(err, ErrNotFound):
		return Result{}, fmt.Errorf("flip %s to %s: %w: %v", ch.Route, ch.To, ErrNotApplied, txnErr)
	case err != nil:
		s.log.Warn("flip outcome unknown", zap.String("route", ch.Route), zap.String("op", ch.Op), zap.NamedError("txn_error", txnErr), zap.Error(err))
		return Result{}, fmt.Errorf("flip %s to %s: %w (transaction: %v; re-read: %v)", ch.Route, ch.To, ErrOutcomeUnknown, txnErr, err)
	}
	if cur.Config.Op == ch.Op {
		s.log.Info("flip landed despite transaction error", zap.String("route", ch.Route), zap.String("op", ch.Op), zap.NamedError("txn_error", txnErr))
		return Result{Config: cur.Config, Revision: cur.ModRevision, Previous: prev, Reread: true}, nil
	}
	if cur.ModRevision == ch.ExpectRev {
		return Result{}, fmt.Errorf("flip %s to %s: %w: %v", ch.Route, ch.To, ErrNotApplied, txnErr)
	}
	return Result{}, &ConflictError{Route: ch.Route, ExpectedRev: ch.ExpectRev, CurrentRev: cur.ModRevision, Current: cur.Config, Exists: true}
}
