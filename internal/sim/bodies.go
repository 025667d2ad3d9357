package sim

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// The captured replies (see testdata/README.md). An embed.FS is read-only,
// so this is not mutable package state.
//
//go:embed testdata
var testdata embed.FS

// bodies holds one kind's captured replies, by file name. They are never
// modified: render decodes a fresh copy for every edit.
type bodies struct {
	raw map[string][]byte
}

func loadBodies(kind string) (*bodies, error) {
	switch kind {
	case KindOpenAI, KindKServeV2, KindTGI, KindOllama:
	default:
		return nil, fmt.Errorf("sim: unknown kind %q (want %s, %s, %s or %s)", kind, KindOpenAI, KindKServeV2, KindTGI, KindOllama)
	}
	dir := path.Join("testdata", kind)
	entries, err := fs.ReadDir(testdata, dir)
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	b := &bodies{raw: make(map[string][]byte, len(entries))}
	for _, e := range entries {
		data, err := fs.ReadFile(testdata, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("sim: %w", err)
		}
		if strings.HasSuffix(e.Name(), ".json") {
			// Fail at New, not in the middle of a test, if a capture was
			// edited into something that is not JSON.
			if _, err := decode(data); err != nil {
				return nil, fmt.Errorf("sim: %s/%s: %w", kind, e.Name(), err)
			}
		}
		b.raw[e.Name()] = data
	}
	return b, nil
}

// Testdata returns a copy of one captured reply, e.g. Testdata("ollama",
// "ps.json"), for tests that need to alter a capture in ways a Behavior
// does not (a model resident in CPU memory only, an expired keep-alive).
func Testdata(kind, name string) ([]byte, error) {
	return fs.ReadFile(testdata, path.Join("testdata", kind, name))
}

// render decodes the named capture, lets edit set fields, and encodes it
// again. Numbers keep their captured text (json.Number).
func (b *bodies) render(name string, edit func(m map[string]any)) []byte {
	m, err := decode(b.raw[name])
	if err != nil {
		// loadBodies decoded every file once already.
		panic(fmt.Sprintf("sim: capture %s: %v", name, err))
	}
	if edit != nil {
		edit(m)
	}
	out, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("sim: encode %s: %v", name, err))
	}
	return out
}

func decode(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	return m, nil
}

// firstOf returns the first element of m[key] when it is a list of
// objects, so edits can reach into captured lists ("data", "models").
func firstOf(m map[string]any, key string) map[string]any {
	list, _ := m[key].([]any)
	if len(list) == 0 {
		return nil
	}
	first, _ := list[0].(map[string]any)
	return first
}
