package commands

import (
	"errors"
	"fmt"
)

// Error codes. A transport maps each to what its user sees: backflipctl to
// exit codes, the bot to the wording of a reply.
const (
	// EINVALID: the input is malformed (grammar, names, flags). Nothing changed.
	EINVALID = "invalid"
	// EUNAUTHORIZED: the actor may not do this here. Nothing changed; the
	// refusal is audited.
	EUNAUTHORIZED = "unauthorized"
	// EREFUSED: the request is well formed and allowed, but backflip will not
	// do it (target cold, already on target, second default-target rollback,
	// stale expected revision). Nothing changed; the refusal is audited.
	EREFUSED = "refused"
	// ECONFLICT: another operation changed the route first. Nothing of this
	// request changed; the message says who did what.
	ECONFLICT = "conflict"
	// ENOTFOUND: the route (or op) does not exist.
	ENOTFOUND = "not_found"
	// EUNAVAILABLE: a dependency (etcd, Postgres) did not answer; the
	// message says whether anything may have changed.
	EUNAVAILABLE = "unavailable"
	// EINTERNAL: a bug or an unexpected state; details are logged only.
	EINTERNAL = "internal"
)

// Error is the error type the use cases return for anything a person should
// read. Message is written for the operator in an incident: what happened,
// and what to do. Err, when set, is the underlying cause for logs; it is
// never shown to a chat user for EINTERNAL.
type Error struct {
	Code    string
	Message string
	// Usage is the usage line to show with an EINVALID error ("" when none).
	Usage string
	Err   error
}

func (e *Error) Error() string {
	if e.Err != nil && e.Code == EINTERNAL {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// wrapf returns an *Error with code, a formatted message and cause err.
func wrapf(err error, code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// ErrorCode returns the code of err: the Code of the first *Error in its
// chain, "" for nil, EINTERNAL for anything else.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns what a person may be shown for err: the Message of
// its *Error, or a generic line for anything else (whose detail goes to the
// logs only).
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) && e.Code != EINTERNAL {
		return e.Message
	}
	return "internal error: backflip could not complete the request; the bot's logs have the details"
}

// ErrorUsage returns the usage line attached to err, if any.
func ErrorUsage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Usage
	}
	return ""
}
