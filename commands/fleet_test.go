package commands

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/backflip-dev/backflip/fleet/fleetapi"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

func TestFleet(t *testing.T) {
	e := newReadEnv(t, readOpts{warm: seededWarm(), noDB: true})
	e.node(t, fleetapi.NodeRecord{Node: "gpu-02", URL: "https://gpu-02:9090", Serving: map[string]map[string]int{
		"chat-70b": {"v42": 4, "v41": 4}, "embed-small": {"v7": 1}}})
	e.node(t, fleetapi.NodeRecord{Node: "gpu-01", URL: "https://gpu-01:9090", Serving: map[string]map[string]int{
		"chat-70b": {"v42": 4, "v41": 2}}})
	e.node(t, fleetapi.NodeRecord{Node: "gpu-03", URL: "https://gpu-03:9090"})
	e.put(t, fleetapi.Keys{Prefix: readPrefix}.Node("gpu-04"), `{"node":"gpu-04","url":"ftp://x","serving":{}}`)

	rep, err := e.svc.Fleet(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Nodes) != 3 || rep.Nodes[0].Node != "gpu-01" || rep.Nodes[2].Node != "gpu-03" || rep.Revision == 0 {
		t.Fatalf("nodes: %+v", rep)
	}
	if len(rep.Malformed) != 1 || !strings.Contains(rep.Malformed[0], "gpu-04") {
		t.Errorf("malformed: %q", rep.Malformed)
	}
	text := rep.String()
	for _, want := range []string{
		"gpu-01  https://gpu-01:9090  chat-70b v41:2 v42:4\n",
		"gpu-02  https://gpu-02:9090  chat-70b v41:4 v42:4 · embed-small v7:1\n",
		"gpu-03  https://gpu-03:9090  serves nothing\n",
		"chat-70b v41: 2 nodes, 6 GPUs\nchat-70b v42: 2 nodes, 8 GPUs\nembed-small v7: 1 node, 1 GPU\n",
		"warning: ",
		"(3 nodes, etcd revision ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var shape struct {
		Nodes []struct {
			Node    string                    `json:"node"`
			Serving map[string]map[string]int `json:"serving"`
		} `json:"nodes"`
		Revision int64 `json:"revision"`
	}
	if err := json.Unmarshal(b, &shape); err != nil || len(shape.Nodes) != 3 || shape.Nodes[1].Serving["chat-70b"]["v41"] != 4 {
		t.Fatalf("JSON shape: %s (%v)", b, err)
	}
}

func TestFleetEmpty(t *testing.T) {
	e := newReadEnv(t, readOpts{warm: seededWarm(), noDB: true})
	rep, err := e.svc.Fleet(testCtx(t))
	if err != nil || len(rep.Nodes) != 0 || rep.Nodes == nil {
		t.Fatalf("%+v %v", rep, err)
	}
	if !strings.Contains(rep.String(), "no node is registered") {
		t.Errorf("text: %s", rep.String())
	}
}

func TestFleetEtcdDown(t *testing.T) {
	srv := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	e := newReadEnv(t, readOpts{cli: proxy.Client(t), warm: seededWarm(), noDB: true})
	proxy.Blackhole()
	t.Cleanup(proxy.Unblackhole)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := e.svc.Fleet(ctx)
	if ErrorCode(err) != EUNAVAILABLE || !strings.HasPrefix(ErrorMessage(err), "etcd could not be read") {
		t.Fatalf("%v (%s)", err, ErrorCode(err))
	}
}
