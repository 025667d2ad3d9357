package routing

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers test them with errors.Is.
var (
	// ErrInvalid: a name, version or change is not acceptable; nothing was written.
	ErrInvalid = errors.New("invalid")
	// ErrNotFound: the route has no config in etcd.
	ErrNotFound = errors.New("route not found")
	// ErrConflict: the route changed since the caller read it; nothing was
	// written. The error is a *ConflictError carrying the current config.
	ErrConflict = errors.New("route changed since it was read")
	// ErrNoChange: the route is already on the requested version.
	ErrNoChange = errors.New("route is already on that version")
	// ErrGuard: one of the caller's extra compares failed (for example an
	// idempotency key that already exists); nothing was written.
	ErrGuard = errors.New("transaction guard failed")
	// ErrMalformed: a value stored in etcd could not be decoded or is
	// invalid. The error is a *MalformedError naming the key.
	ErrMalformed = errors.New("malformed value in etcd")
	// ErrNotApplied: the transaction failed (timeout, lost connection) and a
	// re-read found the route unchanged. Retrying with the same ExpectRev
	// and Op is safe: if the first attempt lands late, the retry reports it.
	ErrNotApplied = errors.New("flip not applied")
	// ErrOutcomeUnknown: the transaction timed out and a re-read could not
	// tell whether it landed. Re-read the route before doing anything else.
	ErrOutcomeUnknown = errors.New("flip outcome unknown")
)

// ConflictError is returned when the route's ModRevision is not the one the
// caller expected. Current is the config now in etcd (zero when the route
// does not exist), so the caller can show the operator what changed.
type ConflictError struct {
	Route       string
	ExpectedRev int64
	CurrentRev  int64
	Current     RouteConfig
	Exists      bool
}

func (e *ConflictError) Error() string {
	if !e.Exists {
		return fmt.Sprintf("route %s: expected revision %d but the route does not exist", e.Route, e.ExpectedRev)
	}
	return fmt.Sprintf("route %s: expected revision %d but it is at %d (now %s, epoch %d, %s by %s)",
		e.Route, e.ExpectedRev, e.CurrentRev, e.Current.Active, e.Current.Epoch, e.Current.Kind, e.Current.Actor)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// MalformedError names the etcd key whose value could not be used.
type MalformedError struct {
	Key string
	Err error
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("malformed value at %s: %v", e.Key, e.Err)
}

// Is makes errors.Is(err, ErrMalformed) true.
func (e *MalformedError) Is(target error) bool { return target == ErrMalformed }

// Unwrap returns the decoding or validation error.
func (e *MalformedError) Unwrap() error { return e.Err }
