package simfleet

import (
	"maps"
	"slices"
	"sync"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// Recorder is an Observer that keeps everything it is told, for tests that
// check a whole run afterwards. The zero value is not usable: use
// NewRecorder.
type Recorder struct {
	mu  sync.Mutex
	rec Record
}

// Record is what a Recorder kept.
type Record struct {
	// Routers and Runtimes are the views each router and each runtime
	// instance applied, by id, in the order it applied them.
	Routers, Runtimes map[string][]routing.View
	// Finishes are the request attempts that reached Done, in the order
	// they were reported.
	Finishes []Finish
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{rec: Record{Routers: map[string][]routing.View{}, Runtimes: map[string][]routing.View{}}}
}

// Observer returns the hooks to pass as Config.Observe.
func (r *Recorder) Observer() *Observer {
	return &Observer{
		RouterApplied: func(id string, v routing.View) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.rec.Routers[id] = append(r.rec.Routers[id], v)
		},
		RuntimeApplied: func(id string, v routing.View) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.rec.Runtimes[id] = append(r.rec.Runtimes[id], v)
		},
		Finished: func(f Finish) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.rec.Finishes = append(r.rec.Finishes, f)
		},
	}
}

// Record returns a copy of what was recorded so far; the fleet may go on
// reporting meanwhile.
func (r *Recorder) Record() Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	cp := func(m map[string][]routing.View) map[string][]routing.View {
		out := maps.Clone(m)
		for k, v := range out {
			out[k] = slices.Clone(v)
		}
		return out
	}
	return Record{Routers: cp(r.rec.Routers), Runtimes: cp(r.rec.Runtimes), Finishes: slices.Clone(r.rec.Finishes)}
}
