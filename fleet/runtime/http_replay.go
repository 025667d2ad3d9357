package runtime

import (
	"errors"
	"strconv"
	"sync"
	"time"
)

// ErrReplayed is returned for a signed request whose (timestamp, signature)
// pair was already accepted. Receivers answer it with 401, like any other
// authentication failure.
var ErrReplayed = errors.New("request replayed")

// errReplayFull is returned when the cache holds its maximum of live
// entries: the request is refused (503) rather than let through unchecked.
var errReplayFull = errors.New("replay cache full")

// DefaultReplayEntries bounds a ReplayCache made with zero capacity.
const DefaultReplayEntries = 100_000

// ReplayCache remembers the (timestamp, signature) pairs of verified
// requests until they leave the 5-minute window, so a captured request
// cannot be replayed inside the window either (outside it, Verify already
// refuses it). Only verified requests are remembered, so forged requests
// cannot fill it. It is bounded: when full of live entries it refuses new
// requests until some expire. It is safe for concurrent use.
type ReplayCache struct {
	mu      sync.Mutex
	max     int
	entries map[string]time.Time // key → expiry
}

// NewReplayCache returns a cache of at most maxEntries live entries
// (DefaultReplayEntries when maxEntries <= 0).
func NewReplayCache(maxEntries int) *ReplayCache {
	if maxEntries <= 0 {
		maxEntries = DefaultReplayEntries
	}
	return &ReplayCache{max: maxEntries, entries: map[string]time.Time{}}
}

// Check records the pair (ts, sig) seen at now, or returns ErrReplayed if
// it was recorded before and has not expired.
func (c *ReplayCache) Check(now time.Time, tsHeader, sig string) error {
	ts, err := strconv.ParseInt(tsHeader, 10, 64)
	if err != nil {
		return ErrUnsigned
	}
	// A pair is refused by Verify once its timestamp is MaxSkew old, so it
	// need not be remembered longer than that.
	expiry := time.Unix(ts, 0).Add(MaxSkew + time.Second)
	key := tsHeader + " " + sig
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.entries[key]; ok && now.Before(exp) {
		return ErrReplayed
	}
	if len(c.entries) >= c.max {
		for k, exp := range c.entries {
			if !now.Before(exp) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= c.max {
			return errReplayFull
		}
	}
	c.entries[key] = expiry
	return nil
}

// Len reports the number of remembered pairs (live or not yet purged).
func (c *ReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
