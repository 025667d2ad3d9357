// Package strictjson decodes JSON from peers and operators strictly: an
// unknown field or anything after the value is an error, not something to
// ignore. Every reader of outside JSON in backflip (etcd values, agent and
// runtime replies, config and pin files) goes through it, so "strict" means
// one thing everywhere.
//
// It must not cap sizes (callers know their limits and check them before)
// and must not validate meaning (callers do that on the decoded value).
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// ErrTrailingData is returned when something follows the JSON value.
var ErrTrailingData = errors.New("trailing data after the JSON value")

// Decode decodes the single JSON value in data into v, refusing unknown
// object fields and trailing data.
func Decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ErrTrailingData
	}
	return nil
}
