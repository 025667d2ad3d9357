package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// FromLookup is FromEnv with the environment injected: it reads each
// variable through lookup (os.LookupEnv's contract: the value and whether it
// is set) instead of the process environment, so a program whose Main takes
// its environment as a function (backflipctl) can be run by tests in
// parallel, each with its own settings, without touching the process's.
//
// It reads exactly what FromEnv reads and fails exactly as FromEnv fails
// (the tests hold the two to the same results): defaults apply to unset
// variables only, a set but empty variable counts as set, lists split on
// commas and are trimmed, durations and numbers parse as envconfig parses
// them, and within a group the first malformed value stops that group.
func FromLookup(lookup func(string) (string, bool)) (*Config, error) {
	var c Config
	if err := c.processLookup(lookup); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// processLookup is process reading through lookup. It handles the field
// types Config uses (string and Secret, []string, time.Duration, float64);
// a field of another type is a bug caught by the tests.
func (c *Config) processLookup(lookup func(string) (string, bool)) error {
	var errs Errors
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		group := v.Field(i)
		for j := range group.NumField() {
			f := group.Type().Field(j)
			name := f.Tag.Get("envconfig")
			if name == "" {
				continue
			}
			value, ok := lookup(name)
			if !ok {
				def := f.Tag.Get("default")
				if def == "" {
					continue
				}
				value = def
			}
			if err := setField(group.Field(j), value); err != nil {
				if _, isType := err.(unsupportedTypeError); isType {
					return fmt.Errorf("config: %s: %w", v.Type().Field(i).Name, err)
				}
				errs = append(errs, parseError(&envconfig.ParseError{
					KeyName: name, FieldName: f.Name, TypeName: f.Type.String(), Value: value, Err: err,
				}))
				break // as envconfig: the first parse error ends the group
			}
		}
		trimLists(group)
	}
	return errs.err()
}

// unsupportedTypeError is a Config field of a type setField cannot fill.
type unsupportedTypeError struct{ t reflect.Type }

func (e unsupportedTypeError) Error() string { return "unsupported field type " + e.t.String() }

// setField parses value into f the way envconfig v1.4.0 does for the types
// Config uses.
func setField(f reflect.Value, value string) error {
	switch {
	case f.Type() == reflect.TypeFor[time.Duration]():
		d, err := time.ParseDuration(value)
		if err != nil {
			return err
		}
		f.SetInt(int64(d))
	case f.Kind() == reflect.String:
		f.SetString(value)
	case f.Kind() == reflect.Float64:
		x, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return err
		}
		f.SetFloat(x)
	case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
		list := []string{}
		if strings.TrimSpace(value) != "" {
			list = strings.Split(value, ",")
		}
		f.Set(reflect.ValueOf(list).Convert(f.Type()))
	default:
		return unsupportedTypeError{f.Type()}
	}
	return nil
}
