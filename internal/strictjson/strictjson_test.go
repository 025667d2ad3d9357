package strictjson

import (
	"errors"
	"testing"
)

func TestDecode(t *testing.T) {
	type T struct {
		A int    `json:"a"`
		B string `json:"b"`
	}
	var v T
	if err := Decode([]byte(" {\"a\":1,\"b\":\"x\"}\n"), &v); err != nil || v.A != 1 || v.B != "x" {
		t.Fatalf("good value: %+v %v", v, err)
	}
	for name, bad := range map[string]string{
		"UnknownField": `{"a":1,"c":2}`,
		"Trailing":     `{"a":1} {"a":2}`,
		"TrailingJunk": `{"a":1}x`,
		"Empty":        ``,
		"WrongType":    `{"a":"1"}`,
		"Truncated":    `{"a":`,
	} {
		t.Run(name, func(t *testing.T) {
			var v T
			if err := Decode([]byte(bad), &v); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if err := Decode([]byte(`{} []`), &v); !errors.Is(err, ErrTrailingData) {
		t.Fatalf("trailing data: %v", err)
	}
}
