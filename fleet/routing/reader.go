package routing

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"
)

// Policy is what a router does with a request while its reader is stale
// (it has not heard from etcd for longer than MaxStaleness).
type Policy int

const (
	// ServeLastKnown keeps routing on the last config it applied. It is the
	// default: an etcd outage must not become an inference outage.
	ServeLastKnown Policy = iota
	// FailClosed refuses requests while stale.
	FailClosed
)

// ParsePolicy parses "serve-last-known" or "fail-closed".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "", "serve-last-known":
		return ServeLastKnown, nil
	case "fail-closed":
		return FailClosed, nil
	}
	return 0, fmt.Errorf("%w: reader policy %q is not serve-last-known or fail-closed", ErrInvalid, s)
}

func (p Policy) String() string {
	if p == FailClosed {
		return "fail-closed"
	}
	return "serve-last-known"
}

// Status is the answer of the per-request check.
type Status uint8

const (
	// StatusOK: the route is still on the version the ticket was issued for.
	StatusOK Status = iota
	// StatusMoved: the route changed (or was pinned, or removed) since the
	// ticket was issued.
	StatusMoved
	// StatusStale: nothing changed that the reader knows of, but it has not
	// heard from etcd for longer than MaxStaleness; policy is serve-last-known.
	StatusStale
	// StatusStaleRefused: as StatusStale, with the fail-closed policy.
	StatusStaleRefused
	// StatusUnknown: the ticket is for a route the reader does not know.
	StatusUnknown
)

// Serve reports whether the router may serve the request on the ticket's version.
func (s Status) Serve() bool { return s == StatusOK || s == StatusStale }

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusMoved:
		return "moved"
	case StatusStale:
		return "stale"
	case StatusStaleRefused:
		return "stale-refused"
	}
	return "unknown"
}

// View is what the reader knows of one route: the config in effect (after a
// pin, if any) and where it came from.
type View struct {
	RouteConfig
	// Revision is the etcd ModRevision of the config (0 for a route known
	// only from the pin file).
	Revision int64
	// Pinned is true when the pin file overrides etcd for this route;
	// EtcdActive is then the version etcd says.
	Pinned     bool
	EtcdActive string
}

// applied is one immutable state of a route. Tickets hold a pointer to it;
// a change swaps in a new one, so the per-request check is a pointer compare.
type applied struct {
	view View
	// etcd is the config as read from etcd (zero for pinned-only routes).
	etcd RouteConfig
	rev  int64
}

// routeState is the stable home of one route for the life of the reader.
type routeState struct {
	cur atomic.Pointer[applied]
}

// routeTable is immutable once published; routes added or removed publish a
// new table.
type routeTable map[string]*routeState

// Ticket pins the state of a route at the start of a request. It is a value:
// taking one and checking it allocate nothing.
type Ticket struct {
	st *routeState
	a  *applied
}

// View returns the route as it was when the ticket was issued.
func (t Ticket) View() View {
	if t.a == nil {
		return View{}
	}
	return t.a.view
}

// WatcherConfig configures a reader.
type WatcherConfig struct {
	Client *clientv3.Client
	Prefix string
	Logger *zap.Logger
	// Now returns the current time (injected for tests). Default time.Now.
	Now func() time.Time
	// MaxStaleness is READER_MAX_STALENESS. Default 30s.
	MaxStaleness time.Duration
	Policy       Policy
	// PinFile is BACKFLIP_PIN_FILE: when it exists, the routes it names are
	// served on the versions it gives, whatever etcd says.
	PinFile string
	// PinPollInterval is how often the pin file is checked. Default 1s.
	PinPollInterval time.Duration
	// ProgressInterval is how often the reader asks etcd for a progress
	// notification when no change arrives. Default MaxStaleness/6, between
	// 100ms and 5s.
	ProgressInterval time.Duration
	// RouterID, when set, makes the reader publish the epochs it has applied
	// at <prefix>/routers/<RouterID> under a lease.
	RouterID string
	// LeaseTTL is the TTL in seconds of the router registration. Default 10.
	LeaseTTL int64
	// OnApply, if set, is called from the reader's goroutine after a route's
	// new state is in effect (routers use it to log, runtimes to abort).
	// It must not block for long.
	OnApply func(v View)
	// Registerer, when set, gets the reader's metrics (read at scrape
	// time; the request path is unchanged): backflip_reader_stale (1 while
	// Valid reports stale: nothing heard from etcd for MaxStaleness),
	// backflip_reader_last_heard_timestamp_seconds (when etcd last
	// answered: a change, a progress notification or a full read; 0 before
	// the first) and backflip_reader_revision, labelled router=RouterID
	// (empty without one; two readers in one process need distinct ids to
	// share a Registerer). Close unregisters them. Nil: no metrics.
	Registerer prometheus.Registerer
}

// Health says how current a reader is.
type Health struct {
	Ready     bool
	Revision  int64
	LastHeard time.Time
	Stale     bool
	// Malformed maps an etcd key to why its value was not applied.
	Malformed map[string]string
	// PinError is why the pin file was last rejected ("" when fine).
	PinError string
	Pins     map[string]string
}

// Watcher is the reader library: a watch-fed, immutable in-memory copy of
// every route. Current and Valid are safe for concurrent use from any
// number of goroutines and cost an atomic load.
type Watcher struct {
	cfg  WatcherConfig
	keys Keyspace
	log  *zap.Logger

	table     atomic.Pointer[routeTable]
	stale     atomic.Bool
	lastHeard atomic.Int64 // unix nanoseconds
	rev       atomic.Int64
	ready     chan struct{}
	readyOnce sync.Once

	// mu serialises the writers (watch loop, pin loop) and guards the fields below.
	mu        sync.Mutex
	pins      map[string]string
	pinStamp  pinStamp
	pinErr    string
	malformed map[string]string

	publishC chan struct{}
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	// metrics are what NewWatcher registered on cfg.Registerer.
	metrics []prometheus.Collector
}

// NewWatcher validates cfg and reads the pin file. A pin file that exists
// but cannot be used is an error here: a router must not start ignoring the
// operator's break-glass instruction.
func NewWatcher(cfg WatcherConfig) (*Watcher, error) {
	if cfg.Client == nil {
		return nil, errors.New("routing: WatcherConfig.Client is nil")
	}
	if cfg.Logger == nil {
		return nil, errors.New("routing: WatcherConfig.Logger is nil")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxStaleness <= 0 {
		cfg.MaxStaleness = 30 * time.Second
	}
	if cfg.PinPollInterval <= 0 {
		cfg.PinPollInterval = time.Second
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = min(max(cfg.MaxStaleness/6, 100*time.Millisecond), 5*time.Second)
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 10
	}
	if cfg.RouterID != "" {
		if err := ValidateOpID(cfg.RouterID); err != nil {
			return nil, fmt.Errorf("router id: %w", err)
		}
	}
	w := &Watcher{
		cfg:       cfg,
		keys:      Keyspace{Prefix: cfg.Prefix},
		log:       cfg.Logger,
		ready:     make(chan struct{}),
		malformed: map[string]string{},
		publishC:  make(chan struct{}, 1),
	}
	empty := routeTable{}
	w.table.Store(&empty)
	w.stale.Store(true) // nothing heard yet
	if cfg.PinFile != "" {
		pins, stamp, err := readPinFile(cfg.PinFile)
		if err != nil {
			return nil, err
		}
		w.pinStamp = stamp
		if len(pins) > 0 {
			w.mu.Lock()
			w.setPinsLocked(pins)
			w.mu.Unlock()
		}
	}
	if cfg.Registerer != nil {
		if err := w.registerMetrics(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// registerMetrics registers the reader's gauges, all or none.
func (w *Watcher) registerMetrics(reg prometheus.Registerer) error {
	// Always the label, empty without a RouterID: a registry wants one
	// name to keep one set of label names.
	labels := prometheus.Labels{"router": w.cfg.RouterID}
	metrics := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "backflip_reader_stale",
			Help:        "1 while the routing reader is stale: it has not heard from etcd for longer than READER_MAX_STALENESS (or not yet at all), and routers apply their stale policy.",
			ConstLabels: labels,
		}, func() float64 {
			if w.stale.Load() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "backflip_reader_last_heard_timestamp_seconds",
			Help:        "Unix time the routing reader last heard from etcd (a change, a progress notification or a full read of the routes); 0 before the first.",
			ConstLabels: labels,
		}, func() float64 { return float64(w.lastHeard.Load()) / 1e9 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "backflip_reader_revision",
			Help:        "The etcd revision the routing reader is known to be current at.",
			ConstLabels: labels,
		}, func() float64 { return float64(w.rev.Load()) }),
	}
	for i, m := range metrics {
		if err := reg.Register(m); err != nil {
			for _, done := range metrics[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("routing reader: register metrics: %w", err)
		}
	}
	w.metrics = metrics
	return nil
}

// Start runs the reader in the background until Close or ctx is done. It
// does not wait for etcd: use WaitReady for that. A pinned router serves
// its pins even when etcd is unreachable from the start.
func (w *Watcher) Start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	w.wg.Add(2)
	go func() { defer w.wg.Done(); w.runWatch(ctx) }()
	go func() { defer w.wg.Done(); w.runStaleness(ctx) }()
	if w.cfg.PinFile != "" {
		w.wg.Add(1)
		go func() { defer w.wg.Done(); w.runPins(ctx) }()
	}
	if w.cfg.RouterID != "" {
		w.wg.Add(1)
		go func() { defer w.wg.Done(); w.runPublish(ctx) }()
	}
}

// WaitReady blocks until the first full read of the routes has been applied.
func (w *Watcher) WaitReady(ctx context.Context) error {
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("routing reader not ready: %w", ctx.Err())
	}
}

// Close stops the reader, withdraws the router registration and unregisters
// its metrics.
func (w *Watcher) Close() {
	if w.cancel != nil {
		w.cancel()
	}
	w.wg.Wait()
	w.mu.Lock()
	metrics := w.metrics
	w.metrics = nil
	w.mu.Unlock()
	for _, m := range metrics {
		w.cfg.Registerer.Unregister(m)
	}
}

// Current returns the route's config in effect. It allocates nothing.
func (w *Watcher) Current(route string) (View, bool) {
	st := (*w.table.Load())[route]
	if st == nil {
		return View{}, false
	}
	a := st.cur.Load()
	if a == nil {
		return View{}, false
	}
	return a.view, true
}

// Ticket is taken when a request starts; Valid checks it at each request
// boundary. It allocates nothing.
func (w *Watcher) Ticket(route string) (Ticket, bool) {
	st := (*w.table.Load())[route]
	if st == nil {
		return Ticket{}, false
	}
	a := st.cur.Load()
	if a == nil {
		return Ticket{}, false
	}
	return Ticket{st: st, a: a}, true
}

// Valid is the request-boundary check: whether the route is still where it
// was when the ticket was issued, and whether the reader is current. It is
// two atomic loads and a compare.
func (w *Watcher) Valid(t Ticket) Status {
	if t.st == nil {
		return StatusUnknown
	}
	if t.st.cur.Load() != t.a {
		return StatusMoved
	}
	if w.stale.Load() {
		if w.cfg.Policy == FailClosed {
			return StatusStaleRefused
		}
		return StatusStale
	}
	return StatusOK
}

// Routes returns every route the reader knows, sorted by name.
func (w *Watcher) Routes() []View {
	t := *w.table.Load()
	out := make([]View, 0, len(t))
	for _, st := range t {
		if a := st.cur.Load(); a != nil {
			out = append(out, a.view)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Route < out[j].Route })
	return out
}

// Revision is the etcd revision the reader is known to be current at.
func (w *Watcher) Revision() int64 { return w.rev.Load() }

// Health reports how current the reader is.
func (w *Watcher) Health() Health {
	h := Health{
		Revision:  w.rev.Load(),
		Stale:     w.stale.Load(),
		Malformed: map[string]string{},
		Pins:      map[string]string{},
	}
	if ns := w.lastHeard.Load(); ns != 0 {
		h.LastHeard = time.Unix(0, ns)
	}
	select {
	case <-w.ready:
		h.Ready = true
	default:
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, v := range w.malformed {
		h.Malformed[k] = v
	}
	for k, v := range w.pins {
		h.Pins[k] = v
	}
	h.PinError = w.pinErr
	return h
}

// heard records that etcd answered at rev.
func (w *Watcher) heard(rev int64) {
	w.lastHeard.Store(w.cfg.Now().UnixNano())
	if rev > w.rev.Load() {
		w.rev.Store(rev)
	}
	if w.stale.Load() {
		w.stale.Store(false)
		w.log.Info("routing reader current again", zap.Int64("revision", rev))
	}
}

// runStaleness flips the stale flag when etcd has been silent for too long.
// Keeping it a flag read by Valid, rather than a clock read per request,
// is what keeps the request-boundary check at an atomic load.
func (w *Watcher) runStaleness(ctx context.Context) {
	every(ctx, min(max(w.cfg.MaxStaleness/10, 10*time.Millisecond), time.Second), w.checkStale)
}

// every calls f every d until ctx is done.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

func (w *Watcher) checkStale() {
	ns := w.lastHeard.Load()
	if ns == 0 {
		return // never heard: stale since birth
	}
	age := w.cfg.Now().Sub(time.Unix(0, ns))
	if age > w.cfg.MaxStaleness && !w.stale.Load() {
		w.stale.Store(true)
		w.log.Warn("routing reader stale: no word from etcd", zap.Duration("silence", age),
			zap.Duration("max_staleness", w.cfg.MaxStaleness), zap.Stringer("policy", w.cfg.Policy))
	}
}

// runWatch keeps the copy current: full read, then watch from the next
// revision; on any watch failure (compaction, lost leader, silence) it reads
// everything again and watches anew.
func (w *Watcher) runWatch(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for attempt := 0; ctx.Err() == nil; attempt++ {
		rev, err := w.load(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("routing reader: read routes failed", zap.Error(err), zap.Duration("retry_in", backoff))
			if !sleep(ctx, jitter(backoff)) {
				return
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		w.watch(ctx, rev, attempt)
	}
}

// load reads every route and applies the result as a whole.
func (w *Watcher) load(ctx context.Context) (int64, error) {
	lctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), w.readTimeout())
	defer cancel()
	resp, err := w.cfg.Client.Get(lctx, w.keys.Routes(), clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	configs := make(map[string]loaded, len(resp.Kvs))
	bad := map[string]string{}
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		name, ok := w.keys.routeFromKey(key)
		if !ok {
			bad[key] = "not a route key"
			continue
		}
		cfg, err := DecodeRouteConfig(key, kv.Value, name)
		if err != nil {
			bad[key] = err.Error()
			w.log.Error("routing reader: value not applied", zap.String("key", key), zap.Error(err))
			// Keep serving the last good config of this route.
			configs[name] = loaded{keep: true}
			continue
		}
		configs[name] = loaded{cfg: cfg, rev: kv.ModRevision}
	}
	w.mu.Lock()
	w.malformed = bad
	changed := w.replaceAllLocked(configs)
	w.mu.Unlock()
	w.heard(resp.Header.Revision)
	w.readyOnce.Do(func() { close(w.ready) })
	w.afterApply(changed)
	return resp.Header.Revision, nil
}

func (w *Watcher) readTimeout() time.Duration {
	return min(max(w.cfg.MaxStaleness/3, time.Second), 10*time.Second)
}

type loaded struct {
	cfg  RouteConfig
	rev  int64
	keep bool // malformed: keep what we have
}

// watch follows changes from rev+1 until the watch fails or goes silent.
func (w *Watcher) watch(ctx context.Context, rev int64, attempt int) {
	// A distinct metadata value gives each attempt its own gRPC stream, so a
	// stream stuck on a dead connection is not reused by the next attempt.
	wctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(
		clientv3.WithRequireLeader(ctx), "backflip-reader-attempt", strconv.Itoa(attempt)))
	defer cancel()
	// Watch blocks until the server has created the watch; on a dead
	// connection that is forever. The watchdog cancels an attempt that has
	// not been created in time, so the loop re-reads and tries again.
	watchdog := time.AfterFunc(w.readTimeout(), cancel)
	defer watchdog.Stop()
	wch := w.cfg.Client.Watch(wctx, w.keys.Routes(), clientv3.WithPrefix(), clientv3.WithRev(rev+1),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	tick := time.NewTicker(w.cfg.ProgressInterval)
	defer tick.Stop()
	silentLimit := max(3*w.cfg.ProgressInterval, w.readTimeout())
	for {
		select {
		case <-ctx.Done():
			return
		case resp, ok := <-wch:
			if !ok {
				return
			}
			if err := resp.Err(); err != nil {
				w.log.Info("routing reader: watch ended, re-reading", zap.Error(err))
				return
			}
			watchdog.Stop()
			w.heard(resp.Header.Revision)
			if len(resp.Events) > 0 {
				w.applyEvents(resp.Events)
			}
		case <-tick.C:
			silence := w.cfg.Now().Sub(time.Unix(0, w.lastHeard.Load()))
			if silence > silentLimit {
				w.log.Warn("routing reader: watch silent, reconnecting", zap.Duration("silence", silence))
				return
			}
			if silence < w.cfg.ProgressInterval {
				// Heard recently (a change, or progress another reader on the
				// same gRPC stream asked for: etcd sends it to every watch of
				// the stream). Asking again would multiply that traffic.
				continue
			}
			pctx, pcancel := context.WithTimeout(wctx, w.cfg.ProgressInterval)
			if err := w.cfg.Client.RequestProgress(pctx); err != nil && ctx.Err() == nil {
				w.log.Debug("routing reader: progress request failed", zap.Error(err))
			}
			pcancel()
		}
	}
}

// applyEvents applies one watch response. Within a response events are in
// revision order; the last event of a key wins.
func (w *Watcher) applyEvents(evs []*clientv3.Event) {
	w.mu.Lock()
	t := *w.table.Load()
	var newTable routeTable // copy-on-write when routes are added or removed
	var buf [4]View         // a watch response rarely carries more changes
	changed := buf[:0]
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		name, ok := w.keys.routeFromKey(key)
		if !ok {
			w.malformed[key] = "not a route key"
			continue
		}
		cur := t
		if newTable != nil {
			cur = newTable
		}
		st := cur[name]
		if ev.Type == clientv3.EventTypeDelete {
			delete(w.malformed, key)
			if st == nil {
				continue
			}
			if _, pinned := w.pins[name]; pinned {
				// Etcd forgot the route; the pin still serves it.
				if a := w.applyLocked(st, name, RouteConfig{}, 0); a != nil {
					changed = append(changed, a.view)
				}
				continue
			}
			if newTable == nil {
				newTable = copyTable(t)
			}
			delete(newTable, name)
			st.cur.Store(nil)
			changed = append(changed, View{RouteConfig: RouteConfig{Route: name}})
			continue
		}
		cfg, err := DecodeRouteConfig(key, ev.Kv.Value, name)
		if err != nil {
			w.malformed[key] = err.Error()
			w.log.Error("routing reader: value not applied", zap.String("key", key), zap.Error(err))
			continue
		}
		delete(w.malformed, key)
		if st == nil {
			if newTable == nil {
				newTable = copyTable(t)
			}
			st = &routeState{}
			newTable[name] = st
		}
		if a := w.applyLocked(st, name, cfg, ev.Kv.ModRevision); a != nil {
			changed = append(changed, a.view)
		}
	}
	if newTable != nil {
		w.table.Store(&newTable)
	}
	w.mu.Unlock()
	w.afterApply(changed)
}

// replaceAllLocked applies a full read: routes missing from it are removed,
// routes in it are applied, malformed ones are kept as they were.
func (w *Watcher) replaceAllLocked(configs map[string]loaded) []View {
	t := *w.table.Load()
	newTable := routeTable{}
	var changed []View
	for name, l := range configs {
		st := t[name]
		if st == nil {
			if l.keep {
				continue // never had a good value
			}
			st = &routeState{}
		}
		newTable[name] = st
		if l.keep {
			continue
		}
		if a := w.applyLocked(st, name, l.cfg, l.rev); a != nil {
			changed = append(changed, a.view)
		}
	}
	for name := range w.pins {
		if _, ok := newTable[name]; ok {
			continue
		}
		st := t[name]
		if st == nil {
			st = &routeState{}
		}
		newTable[name] = st
		if a := w.applyLocked(st, name, RouteConfig{}, 0); a != nil {
			changed = append(changed, a.view)
		}
	}
	for name, st := range t {
		if _, ok := newTable[name]; !ok {
			st.cur.Store(nil)
			changed = append(changed, View{RouteConfig: RouteConfig{Route: name}})
		}
	}
	w.table.Store(&newTable)
	return changed
}

// applyLocked installs cfg (the config etcd has, zero when it has none)
// with the pin overlay into st, unless nothing would change. Epochs only
// increase: a config older than the one applied is ignored. It returns the
// new state, or nil when it kept the old one.
func (w *Watcher) applyLocked(st *routeState, name string, cfg RouteConfig, rev int64) *applied {
	old := st.cur.Load()
	if old != nil && cfg.Epoch != 0 && cfg.Epoch < old.etcd.Epoch {
		w.log.Warn("routing reader: ignoring older epoch", zap.String("route", name),
			zap.Int64("have", old.etcd.Epoch), zap.Int64("got", cfg.Epoch))
		return nil
	}
	a := &applied{etcd: cfg, rev: rev}
	a.view = View{RouteConfig: cfg, Revision: rev, EtcdActive: cfg.Active}
	if pin, ok := w.pins[name]; ok {
		a.view.Pinned = true
		a.view.Route = name
		if pin != cfg.Active {
			a.view.Previous = cfg.Active
			a.view.Active = pin
		}
	}
	if old != nil && old.etcd.Epoch == a.etcd.Epoch && old.view.Active == a.view.Active && old.view.Pinned == a.view.Pinned {
		return nil // same state: keep tickets valid
	}
	st.cur.Store(a)
	return a
}

// repinLocked re-applies a route after the pins changed, keeping what etcd said.
func (w *Watcher) repinLocked(st *routeState, name string) *applied {
	if old := st.cur.Load(); old != nil {
		return w.applyLocked(st, name, old.etcd, old.rev)
	}
	return w.applyLocked(st, name, RouteConfig{}, 0)
}

// afterApply runs outside the lock: notify the publisher and the callback.
func (w *Watcher) afterApply(changed []View) {
	if len(changed) == 0 {
		return
	}
	select {
	case w.publishC <- struct{}{}:
	default:
	}
	if w.cfg.OnApply != nil {
		for _, v := range changed {
			w.cfg.OnApply(v)
		}
	}
}

func copyTable(t routeTable) routeTable {
	n := make(routeTable, len(t)+1)
	for k, v := range t {
		n[k] = v
	}
	return n
}

// sleep waits d or until ctx is done; it reports whether to go on.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter spreads retries of many routers over ±25% of d, so a recovering
// etcd is not hit by all of them at once.
func jitter(d time.Duration) time.Duration {
	return d - d/4 + rand.N(d/2+1)
}
