package commands

import (
	"context"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
)

// FleetReport is what `fleet` answers: the node records the agents keep in
// etcd, read at one revision.
type FleetReport struct {
	// Nodes are sorted by name.
	Nodes []fleetapi.NodeRecord `json:"nodes"`
	// Malformed lists records that could not be used; warm checks count
	// them for nothing.
	Malformed []string `json:"malformed,omitempty"`
	// Revision is the etcd revision the records were read at.
	Revision int64 `json:"revision"`
}

// Fleet lists the GPU nodes registered in etcd and what each serves. It
// asks no agent: a node is listed while its agent keeps its leased record
// alive, whether or not the versions it serves are warm (status and the
// warm checks ask the agents).
func (s *Service) Fleet(ctx context.Context) (FleetReport, error) {
	keys := fleetapi.Keys{Prefix: s.cfg.Prefix}
	resp, err := s.etcd.Get(ctx, keys.Nodes(), clientv3.WithPrefix())
	if err != nil {
		return FleetReport{}, unavailable(err, "etcd could not be read: %s", causeText(err))
	}
	rep := FleetReport{Revision: resp.Header.Revision, Nodes: []fleetapi.NodeRecord{}}
	for _, kv := range resp.Kvs {
		rec, err := fleetapi.DecodeNodeRecord(keys, string(kv.Key), kv.Value)
		if err != nil {
			rep.Malformed = append(rep.Malformed, err.Error())
			continue
		}
		rep.Nodes = append(rep.Nodes, rec)
	}
	slices.SortFunc(rep.Nodes, func(a, b fleetapi.NodeRecord) int { return strings.Compare(a.Node, b.Node) })
	return rep, nil
}

// String renders the fleet for a person at a terminal: one line per node
// with what it serves, then the totals per route and version, e.g.
//
//	gpu-01  https://gpu-01:9090  chat-70b v41:4 v42:4 · embed-small v7:1
//	...
//	chat-70b v42: 24 nodes, 96 GPUs
func (f *FleetReport) String() string {
	var b strings.Builder
	type total struct{ nodes, gpus int }
	totals := map[string]map[string]*total{}
	for _, n := range f.Nodes {
		fmt.Fprintf(&b, "%s  %s  ", n.Node, plainText(n.URL, 200))
		routes := sortedKeys(n.Serving)
		if len(routes) == 0 {
			b.WriteString("serves nothing")
		}
		for i, route := range routes {
			if i > 0 {
				b.WriteString(" · ")
			}
			b.WriteString(route)
			for _, version := range sortedKeys(n.Serving[route]) {
				gpus := n.Serving[route][version]
				fmt.Fprintf(&b, " %s:%d", version, gpus)
				if totals[route] == nil {
					totals[route] = map[string]*total{}
				}
				t := totals[route][version]
				if t == nil {
					t = &total{}
					totals[route][version] = t
				}
				t.nodes++
				t.gpus += gpus
			}
		}
		b.WriteString("\n")
	}
	if len(f.Nodes) == 0 {
		b.WriteString("no node is registered: no agent is running, or none can reach etcd\n")
	} else {
		b.WriteString("\n")
	}
	for _, route := range sortedKeys(totals) {
		for _, version := range sortedKeys(totals[route]) {
			t := totals[route][version]
			fmt.Fprintf(&b, "%s %s: %d %s, %d %s\n", route, version, t.nodes, plural(t.nodes, "node", "nodes"), t.gpus, plural(t.gpus, "GPU", "GPUs"))
		}
	}
	for _, m := range f.Malformed {
		fmt.Fprintf(&b, "warning: %s\n", plainText(m, 300))
	}
	fmt.Fprintf(&b, "(%d %s, etcd revision %d)\n", len(f.Nodes), plural(len(f.Nodes), "node", "nodes"), f.Revision)
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
