package fleetapi

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/strictjson"
)

// Limits on what is read from a peer.
const (
	// MaxReplyBytes caps an agent's HTTP reply.
	MaxReplyBytes = 1 << 20
	// MaxRecordBytes caps a node record in etcd.
	MaxRecordBytes = 64 << 10
	// MaxNodeLen bounds a node name (a DNS name fits).
	MaxNodeLen = 253
	// MaxGPUs bounds the GPUs one node may claim for one version.
	MaxGPUs = 1024
)

// ErrInvalid marks a record or reply that is malformed or out of bounds.
var ErrInvalid = errors.New("invalid fleet data")

// Keys builds the fleet's etcd keys under a prefix.
type Keys struct{ Prefix string }

// Nodes is the prefix of all node records.
func (k Keys) Nodes() string { return k.Prefix + "/fleet/nodes/" }

// Node is one node's record key. The name must have been validated.
func (k Keys) Node(node string) string { return k.Nodes() + node }

// NodeFromKey returns the node name of a key under Nodes().
func (k Keys) NodeFromKey(key string) (string, bool) {
	name, ok := strings.CutPrefix(key, k.Nodes())
	if !ok || ValidateNode(name) != nil {
		return "", false
	}
	return name, true
}

// ValidateNode checks a node name: 1 to 253 bytes of letters, digits, '.',
// '_' and '-', starting and ending with a letter or digit.
func ValidateNode(name string) error {
	if name == "" || len(name) > MaxNodeLen {
		return fmt.Errorf("%w: node name must be 1 to %d bytes, got %d", ErrInvalid, MaxNodeLen, len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		if !alnum && ((c != '.' && c != '_' && c != '-') || i == 0 || i == len(name)-1) {
			return fmt.Errorf("%w: node name %q: character %q not allowed here", ErrInvalid, name, c)
		}
	}
	return nil
}

// NodeRecord is what an agent registers, under a lease, at
// <prefix>/fleet/nodes/<node>: where to reach it and which versions of which
// routes it serves, with their GPUs.
type NodeRecord struct {
	Node    string                    `json:"node"`
	URL     string                    `json:"url"`
	Serving map[string]map[string]int `json:"serving"`
}

// Validate checks every name and number in the record.
func (n *NodeRecord) Validate() error {
	if err := ValidateNode(n.Node); err != nil {
		return err
	}
	u, err := url.Parse(n.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return fmt.Errorf("%w: node %s: url %q is not an http(s) URL without credentials", ErrInvalid, n.Node, n.URL)
	}
	for route, versions := range n.Serving {
		if err := routing.ValidateRoute(route); err != nil {
			return fmt.Errorf("node %s: %w", n.Node, err)
		}
		for version, gpus := range versions {
			if err := routing.ValidateVersion(version); err != nil {
				return fmt.Errorf("node %s route %s: %w", n.Node, route, err)
			}
			if gpus < 0 || gpus > MaxGPUs {
				return fmt.Errorf("%w: node %s route %s version %s: gpus %d outside 0..%d", ErrInvalid, n.Node, route, version, gpus, MaxGPUs)
			}
		}
	}
	return nil
}

// GPUs returns the GPUs the node serves route's version with (0 if none).
func (n *NodeRecord) GPUs(route, version string) int { return n.Serving[route][version] }

// DecodeNodeRecord strictly decodes the record stored at key, and checks
// that its node name matches the key.
func DecodeNodeRecord(k Keys, key string, value []byte) (NodeRecord, error) {
	var n NodeRecord
	name, ok := k.NodeFromKey(key)
	if !ok {
		return n, fmt.Errorf("%w: %s is not a node key", ErrInvalid, key)
	}
	if len(value) > MaxRecordBytes {
		return n, fmt.Errorf("%w: %s: record is %d bytes, at most %d allowed", ErrInvalid, key, len(value), MaxRecordBytes)
	}
	if err := strictjson.Decode(value, &n); err != nil {
		return NodeRecord{}, fmt.Errorf("%w: %s: %v", ErrInvalid, key, err)
	}
	if n.Node != name {
		return NodeRecord{}, fmt.Errorf("%w: %s: node field %q does not match the key", ErrInvalid, key, n.Node)
	}
	if err := n.Validate(); err != nil {
		return NodeRecord{}, fmt.Errorf("%s: %w", key, err)
	}
	return n, nil
}

// VersionState is an agent's latest observation of one version of one route
// on its node.
type VersionState struct {
	Route   string `json:"route"`
	Version string `json:"version"`
	// Kind is the inference server's protocol (openai, kserve-v2, tgi, ollama).
	Kind string `json:"kind,omitempty"`
	// Served is false when the node has no server configured for this
	// route and version; the other fields are then zero.
	Served bool `json:"served"`
	// Loaded: the server has the expected version (model id, digest, or
	// version) loaded and, where the engine says so, resident.
	Loaded bool `json:"loaded"`
	// Ready: the server's readiness endpoint answered ready.
	Ready bool `json:"ready"`
	// Warm: loaded, ready, and a canary inference answered within budget.
	Warm bool `json:"warm"`
	GPUs int  `json:"gpus"`
	// CanaryMS is the latency of the last canary inference.
	CanaryMS float64 `json:"canary_ms"`
	// InFlight is the server's running request count where it exposes one.
	InFlight *int `json:"inflight,omitempty"`
	// Error says why the version is not warm ("" when it is).
	Error      string    `json:"error,omitempty"`
	ObservedAt time.Time `json:"observed_at"`
	// AgeMS is how old the observation was when the reply was sent.
	AgeMS int64 `json:"age_ms"`
}

// WarmReply is the body of GET /v1/warm?route=R&version=V.
type WarmReply struct {
	Node string `json:"node"`
	VersionState
}

// StatusReply is the body of GET /v1/status.
type StatusReply struct {
	Node     string         `json:"node"`
	At       time.Time      `json:"at"`
	Versions []VersionState `json:"versions"`
}

// MaxErrorLen bounds the error text an agent may report.
const MaxErrorLen = 2000

func (s *VersionState) validate() error {
	if err := routing.ValidateRoute(s.Route); err != nil {
		return err
	}
	if err := routing.ValidateVersion(s.Version); err != nil {
		return err
	}
	if s.GPUs < 0 || s.GPUs > MaxGPUs {
		return fmt.Errorf("%w: gpus %d outside 0..%d", ErrInvalid, s.GPUs, MaxGPUs)
	}
	if s.CanaryMS < 0 || s.AgeMS < 0 || (s.InFlight != nil && *s.InFlight < 0) {
		return fmt.Errorf("%w: negative latency, age or in-flight count", ErrInvalid)
	}
	if len(s.Error) > MaxErrorLen {
		return fmt.Errorf("%w: error text is %d bytes, at most %d allowed", ErrInvalid, len(s.Error), MaxErrorLen)
	}
	if s.Warm && (!s.Served || !s.Loaded || !s.Ready) {
		return fmt.Errorf("%w: warm but not served, loaded and ready", ErrInvalid)
	}
	return nil
}

// DecodeWarmReply reads and strictly decodes a /v1/warm reply, at most
// MaxReplyBytes of it, and checks it answers the question asked.
func DecodeWarmReply(r io.Reader, node, route, version string) (WarmReply, error) {
	var w WarmReply
	if err := decodeCapped(r, &w); err != nil {
		return WarmReply{}, err
	}
	if w.Node != node {
		return WarmReply{}, fmt.Errorf("%w: reply from node %q, expected %q", ErrInvalid, w.Node, node)
	}
	if w.Route != route || w.Version != version {
		return WarmReply{}, fmt.Errorf("%w: reply about %s@%s, asked about %s@%s", ErrInvalid, w.Route, w.Version, route, version)
	}
	if err := w.validate(); err != nil {
		return WarmReply{}, err
	}
	return w, nil
}

// DecodeStatusReply reads and strictly decodes a /v1/status reply.
func DecodeStatusReply(r io.Reader) (StatusReply, error) {
	var s StatusReply
	if err := decodeCapped(r, &s); err != nil {
		return StatusReply{}, err
	}
	if err := ValidateNode(s.Node); err != nil {
		return StatusReply{}, err
	}
	for i := range s.Versions {
		if err := s.Versions[i].validate(); err != nil {
			return StatusReply{}, fmt.Errorf("version %d: %w", i, err)
		}
	}
	return s, nil
}

func decodeCapped(r io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxReplyBytes+1))
	if err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	if len(data) > MaxReplyBytes {
		return fmt.Errorf("%w: reply larger than %d bytes", ErrInvalid, MaxReplyBytes)
	}
	if err := strictjson.Decode(data, v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}
