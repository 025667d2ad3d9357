package routing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"

	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/internal/strictjson"
)

// PinFile is the break-glass file (BACKFLIP_PIN_FILE) an operator writes on a
// router when etcd itself is down or wrong:
//
//	{"reason": "etcd down, INC-1234", "actor": "alice", "routes": {"chat-70b": "v41"}}
//
// While it exists, the routes it names are served on the versions it gives,
// whatever etcd says; removing the file hands control back to etcd.
type PinFile struct {
	Reason string            `json:"reason"`
	Actor  string            `json:"actor"`
	Routes map[string]string `json:"routes"`
}

// maxPinFileLen bounds what the reader will read from the pin file.
const maxPinFileLen = 64 << 10

// pinStamp is the content last read from the pin file, to notice changes.
type pinStamp struct {
	exists  bool
	content []byte
}

// readPinFile reads and strictly decodes the pin file. An absent file means
// no pins; anything else that is wrong is an error naming the file.
func readPinFile(path string) (map[string]string, pinStamp, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, pinStamp{}, nil
	}
	if err != nil {
		return nil, pinStamp{}, fmt.Errorf("pin file %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPinFileLen+1))
	if err != nil {
		return nil, pinStamp{}, fmt.Errorf("pin file %s: %w", path, err)
	}
	stamp := pinStamp{exists: true, content: data}
	pins, err := ParsePinFile(data)
	if err != nil {
		return nil, stamp, fmt.Errorf("pin file %s: %w", path, err)
	}
	return pins, stamp, nil
}

// ParsePinFile decodes a pin file's content and validates every name in it.
func ParsePinFile(data []byte) (map[string]string, error) {
	if len(data) > maxPinFileLen {
		return nil, fmt.Errorf("%w: pin file is larger than %d bytes", ErrInvalid, maxPinFileLen)
	}
	var pf PinFile
	if err := strictjson.Decode(data, &pf); err != nil {
		return nil, fmt.Errorf("%w: %v (expected {\"reason\":\"...\",\"routes\":{\"<route>\":\"<version>\"}})", ErrInvalid, err)
	}
	if len(pf.Routes) == 0 {
		return nil, fmt.Errorf("%w: pin file names no routes (delete the file to unpin)", ErrInvalid)
	}
	for route, version := range pf.Routes {
		if err := ValidateRoute(route); err != nil {
			return nil, err
		}
		if err := ValidateVersion(version); err != nil {
			return nil, fmt.Errorf("route %s: %w", route, err)
		}
	}
	return pf.Routes, nil
}

// runPins re-reads the pin file every PinPollInterval. A file that turns
// bad keeps the last good pins in force and is reported in Health: a typo
// during an outage must not silently unpin a router.
func (w *Watcher) runPins(ctx context.Context) {
	every(ctx, w.cfg.PinPollInterval, w.pollPins)
}

func (w *Watcher) pollPins() {
	pins, stamp, err := readPinFile(w.cfg.PinFile)
	w.mu.Lock()
	if stamp.exists == w.pinStamp.exists && bytes.Equal(stamp.content, w.pinStamp.content) && (err != nil) == (w.pinErr != "") {
		w.mu.Unlock()
		return
	}
	w.pinStamp = stamp
	if err != nil {
		w.pinErr = err.Error()
		w.mu.Unlock()
		w.log.Error("pin file rejected; keeping the pins in force", zap.Error(err))
		return
	}
	w.pinErr = ""
	changed := w.setPinsLocked(pins)
	w.mu.Unlock()
	if len(pins) == 0 {
		w.log.Warn("pin file removed: etcd routes every route again")
	} else {
		w.log.Warn("pin file in effect: these routes ignore etcd", zap.Any("pins", pins))
	}
	w.afterApply(changed)
}

// setPinsLocked replaces the pins and re-applies every route they touch.
func (w *Watcher) setPinsLocked(pins map[string]string) []View {
	names := make([]string, 0, len(pins)+len(w.pins))
	for n := range pins {
		names = append(names, n)
	}
	for n := range w.pins {
		if _, ok := pins[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	w.pins = pins
	t := *w.table.Load()
	var nt routeTable
	var changed []View
	for _, name := range names {
		_, pinned := pins[name]
		st := t[name]
		if st == nil {
			if !pinned {
				continue
			}
			if nt == nil {
				nt = copyTable(t)
			}
			st = &routeState{}
			nt[name] = st
		}
		if old := st.cur.Load(); !pinned && (old == nil || old.etcd.Epoch == 0) {
			// A route known only from the pin file is gone with its pin.
			if nt == nil {
				nt = copyTable(t)
			}
			delete(nt, name)
			st.cur.Store(nil)
			changed = append(changed, View{RouteConfig: RouteConfig{Route: name}})
			continue
		}
		if a := w.repinLocked(st, name); a != nil {
			changed = append(changed, a.view)
		}
	}
	if nt != nil {
		w.table.Store(&nt)
	}
	return changed
}
