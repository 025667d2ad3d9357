package routing

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/backflip-dev/backflip/internal/strictjson"
)

// Kind says what kind of change produced a route's current config.
type Kind string

// The kinds of change of the contract.
const (
	KindPromote     Kind = "promote"
	KindRollback    Kind = "rollback"
	KindDrill       Kind = "drill"
	KindDrillReturn Kind = "drill_return"
)

// Valid reports whether k is one of the contract's kinds.
func (k Kind) Valid() bool {
	switch k {
	case KindPromote, KindRollback, KindDrill, KindDrillReturn:
		return true
	}
	return false
}

// Aborts reports whether a change of this kind aborts requests still running
// on the version it moved away from. A promotion lets them finish where they
// started; every kind of rollback does not.
func (k Kind) Aborts() bool {
	return k == KindRollback || k == KindDrill || k == KindDrillReturn
}

// RouteConfig is the routing config of one model route, the JSON value at
// <prefix>/routes/<route>. It is the single source of truth for routing.
//
// After a promote to N: Active=N, Previous=From=the version active before.
// After a rollback (or drill, or drill return) to T: Active=T,
// Previous=From=the version rolled away from. Epoch increases by one on
// every change.
type RouteConfig struct {
	Route    string    `json:"route"`
	Active   string    `json:"active"`
	Previous string    `json:"previous"`
	Kind     Kind      `json:"kind"`
	From     string    `json:"from"`
	Epoch    int64     `json:"epoch"`
	Op       string    `json:"op"`
	Reason   string    `json:"reason"`
	Actor    string    `json:"actor"`
	At       time.Time `json:"at"`
}

// MaxReasonLen and MaxActorLen bound the free-text fields so a hostile or
// pasted-in reason cannot bloat every reader's copy of the route.
const (
	MaxReasonLen = 1000
	MaxActorLen  = 200
	// maxValueLen bounds a stored value before it is decoded at all.
	maxValueLen = 16 << 10
)

// Validate checks a config for the invariants every stored value must hold.
func (c *RouteConfig) Validate() error {
	if err := ValidateRoute(c.Route); err != nil {
		return fmt.Errorf("route: %w", err)
	}
	if err := ValidateVersion(c.Active); err != nil {
		return fmt.Errorf("active: %w", err)
	}
	if c.Previous != "" {
		if err := ValidateVersion(c.Previous); err != nil {
			return fmt.Errorf("previous: %w", err)
		}
		if c.Previous == c.Active {
			return fmt.Errorf("%w: previous %q equals active", ErrInvalid, c.Previous)
		}
	}
	if c.From != "" {
		if err := ValidateVersion(c.From); err != nil {
			return fmt.Errorf("from: %w", err)
		}
	}
	if !c.Kind.Valid() {
		return fmt.Errorf("%w: kind %q is not one of promote, rollback, drill, drill_return", ErrInvalid, c.Kind)
	}
	if c.Kind != KindPromote && c.From == "" {
		return fmt.Errorf("%w: a %s must record the version it moved from", ErrInvalid, c.Kind)
	}
	if c.Epoch < 1 {
		return fmt.Errorf("%w: epoch %d must be at least 1", ErrInvalid, c.Epoch)
	}
	if err := ValidateOpID(c.Op); err != nil {
		return fmt.Errorf("op: %w", err)
	}
	if len(c.Reason) > MaxReasonLen {
		return fmt.Errorf("%w: reason is %d bytes, at most %d allowed", ErrInvalid, len(c.Reason), MaxReasonLen)
	}
	if len(c.Actor) > MaxActorLen {
		return fmt.Errorf("%w: actor is %d bytes, at most %d allowed", ErrInvalid, len(c.Actor), MaxActorLen)
	}
	if c.At.IsZero() {
		return fmt.Errorf("%w: at is missing", ErrInvalid)
	}
	return nil
}

// Encode returns the JSON value stored in etcd.
func (c *RouteConfig) Encode() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(c)
}

// DecodeRouteConfig strictly decodes the value stored at key: unknown fields,
// trailing data, missing fields and invalid names are errors that name the
// key, and a value whose route field disagrees with its key is refused. A
// value that fails here is never applied, not even in part.
func DecodeRouteConfig(key string, value []byte, wantRoute string) (RouteConfig, error) {
	if len(value) > maxValueLen {
		return RouteConfig{}, &MalformedError{Key: key, Err: fmt.Errorf("value is %d bytes, at most %d allowed", len(value), maxValueLen)}
	}
	c, ok := decodeFast(value)
	if !ok {
		var err error
		if c, err = decodeStrict(value); err != nil {
			return RouteConfig{}, &MalformedError{Key: key, Err: err}
		}
	}
	if err := c.Validate(); err != nil {
		return RouteConfig{}, &MalformedError{Key: key, Err: err}
	}
	if wantRoute != "" && c.Route != wantRoute {
		return RouteConfig{}, &MalformedError{Key: key, Err: fmt.Errorf("route field %q does not match the key", c.Route)}
	}
	return c, nil
}

// decodeStrict is encoding/json with unknown fields and trailing data refused.
func decodeStrict(value []byte) (RouteConfig, error) {
	var c RouteConfig
	if err := strictjson.Decode(value, &c); err != nil {
		return RouteConfig{}, err
	}
	return c, nil
}

// Keyspace builds the etcd keys this package reads and writes, under one
// prefix (BACKFLIP_ETCD_PREFIX).
type Keyspace struct {
	Prefix string
}

// Routes is the prefix under which all route configs live.
func (k Keyspace) Routes() string { return k.Prefix + "/routes/" }

// Route is the key of one route's config. The name must have been validated.
func (k Keyspace) Route(route string) string { return k.Routes() + route }

// Routers is the prefix under which routers publish what they have applied.
func (k Keyspace) Routers() string { return k.Prefix + "/routers/" }

// Router is the key one router publishes under.
func (k Keyspace) Router(id string) string { return k.Routers() + id }

// routeFromKey returns the route name of a key under Routes(), or false when
// the key is not a direct child (a stray key such as routes/a/b).
func (k Keyspace) routeFromKey(key string) (string, bool) {
	name, ok := strings.CutPrefix(key, k.Routes())
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", false
	}
	return name, true
}
