package config

import (
	"reflect"
	"testing"
)

// mapLookup is os.LookupEnv over a map.
func mapLookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// assertSameAsFromEnv runs FromEnv with env as the process environment and
// FromLookup with env as a map, and fails unless both give the same Config
// or the same error.
func assertSameAsFromEnv(t *testing.T, env map[string]string) {
	t.Helper()
	cleanEnv(t)
	setEnv(t, env)
	want, wantErr := FromEnv()
	got, gotErr := FromLookup(mapLookup(env))
	switch {
	case (wantErr == nil) != (gotErr == nil):
		t.Fatalf("env %q:\nFromEnv    %+v, %v\nFromLookup %+v, %v", env, want, wantErr, got, gotErr)
	case wantErr != nil && wantErr.Error() != gotErr.Error():
		t.Fatalf("env %q: errors differ:\nFromEnv    %v\nFromLookup %v", env, wantErr, gotErr)
	case !reflect.DeepEqual(want, got):
		t.Fatalf("env %q: configs differ:\nFromEnv    %#v\nFromLookup %#v", env, want, got)
	}
}

func TestFromLookupMatchesFromEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
	}{
		{"Defaults", nil},
		{"Everything", map[string]string{
			"BACKFLIP_ETCD_ENDPOINTS": "http://etcd-0:2379, etcd-1:2379,", "BACKFLIP_ETCD_PREFIX": "/bf",
			"BACKFLIP_ETCD_CA_FILE": "/ca", "BACKFLIP_ETCD_CERT_FILE": "/c", "BACKFLIP_ETCD_KEY_FILE": "/k",
			"BACKFLIP_ETCD_USERNAME": "ctl", "BACKFLIP_ETCD_PASSWORD": "pw",
			"BACKFLIP_DATABASE_URL": "postgres://a@db/audit", "BACKFLIP_WARM_QUORUM": "0.75",
			"BACKFLIP_WARM_TIMEOUT": "1500ms", "BACKFLIP_INCIDENT_CHANNELS": "C1, inc-*",
			"BACKFLIP_AGENT_TOKEN": "tok", "BACKFLIP_RUNTIME_SECRET": "sec", "BACKFLIP_LOG_LEVEL": "debug",
		}},
		{"SetButEmptyList", map[string]string{"BACKFLIP_ROLLBACK_USERS": "", "BACKFLIP_DRILL_USERS": " , "}},
		{"SetButEmptyDuration", map[string]string{"BACKFLIP_CARD_TTL": ""}},
		{"SetButEmptyNumber", map[string]string{"BACKFLIP_WARM_QUORUM": ""}},
		{"SetButEmptyString", map[string]string{"BACKFLIP_LOG_LEVEL": ""}},
		{"TwoParseErrorsOneGroup", map[string]string{"BACKFLIP_WARM_TIMEOUT": "soon", "BACKFLIP_WARM_MAX_AGE": "old"}},
		{"ParseErrorsOfSeveralGroups", map[string]string{"BACKFLIP_CARD_TTL": "later", "BACKFLIP_WARM_MAX_AGE": "old"}},
		{"ParseAndValidationErrors", map[string]string{"BACKFLIP_WARM_QUORUM": "high", "BACKFLIP_LOG_FORMAT": "text"}},
		{"UnprefixedIgnored", map[string]string{"DATABASE_URL": "postgres://x@y/z", "ETCD_ENDPOINTS": "a:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { assertSameAsFromEnv(t, tt.env) })
	}
}

// TestFromLookupEveryVariable sets each variable alone to a few odd values,
// so a field type FromLookup parses differently from envconfig (or not at
// all) fails here.
func TestFromLookupEveryVariable(t *testing.T) {
	for _, v := range Vars() {
		for _, value := range []string{"", "x", " a, b ,", "1.5", "90s", "-1"} {
			t.Run(v.Name+"="+value, func(t *testing.T) {
				assertSameAsFromEnv(t, map[string]string{v.Name: value})
			})
		}
	}
}
