package commands

import (
	"regexp"
	"strings"
	"testing"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// FuzzIdem checks both halves of idem/<key>: the key, which comes from a
// chat transport (trigger ids, event ids) and becomes part of an etcd key,
// and the value, an op id that a retried request reads back (replay) and
// uses to build ops/<op>. An accepted key is 1 to 128 characters of
// letters, digits, '.', '_', ':' and '-', so idem/<key> is one key segment;
// an accepted value is 1 to 64 characters of letters, digits, '-' and '_',
// so ops/<op> is one key segment too. The patterns are the contract's,
// written out here rather than taken from the validators.
func FuzzIdem(f *testing.F) {
	for _, s := range [][2]string{
		{"trigger:13345224609.738474920.8088930838d88f008e0", "0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e11"},
		{"card-0b3e8a52-6c1e-4d47-a1a4-9b7f2c0d9e11", "op_1"},
		{"Ev0123ABCD", strings.Repeat("a", 64)},
		{"a/b", "op/1"},
		{"..", ".."},
		{strings.Repeat("x", 129), strings.Repeat("a", 65)},
		{"é", "\x00"},
		{"", ""},
		{"key ", "op-1\n"},
	} {
		f.Add(s[0], []byte(s[1]))
	}
	keyPattern := regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
	opPattern := regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	k := Keys{Prefix: "/backflip"}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		if err := validateIdemKey(key); err == nil {
			if !keyPattern.MatchString(key) {
				t.Fatalf("accepted idempotency key %q", key)
			}
			if rest := strings.TrimPrefix(k.Idem(key), "/backflip/idem/"); rest != key || strings.Contains(rest, "/") {
				t.Fatalf("idem key %q is not one segment", k.Idem(key))
			}
		} else if ErrorCode(err) != EINVALID {
			t.Fatalf("refused key %q with %v, want EINVALID", key, err)
		}
		// What replay does with the value.
		op := string(value)
		if routing.ValidateOpID(op) != nil {
			return
		}
		if !opPattern.MatchString(op) {
			t.Fatalf("accepted op id %q", op)
		}
		if rest := strings.TrimPrefix(k.Op(op), k.Ops()); rest != op || strings.Contains(rest, "/") {
			t.Fatalf("op key %q is not one segment", k.Op(op))
		}
	})
}
