package agent

import (
	"context"
	"net/http"
	"net/url"
)

// kserveProber checks a server speaking the Open Inference Protocol (KServe
// v2: Triton, KServe runtimes, MLServer):
//
//   - ready:  GET /v2/models/{m}/versions/{v}/ready answers 200 (the
//     protocol: "200 indicates true, 4xx false"). GET /v2/health/ready is
//     asked first — no answer at all ends the probe, and its "not ready" is
//     reported when the model is not ready either — but it does not decide:
//     server readiness means *all* models on the server are ready, and
//     another model loading on a shared Triton must not make this one cold;
//   - loaded: the same model-ready answer — the protocol has no separate
//     notion of loaded;
//   - warm:   POST .../infer with the prompt as a one-element BYTES tensor
//     answers an outputs array within the budget.
//
// The input tensor's name is model-specific ("text_input" on Triton's LLM
// backends, "input0" in KServe's examples), so it is read from the model's
// metadata (GET /v2/models/{m}/versions/{v}) on every probe: the first
// input of datatype BYTES. Without model_version the unversioned paths are
// used and the server picks the version.
type kserveProber struct{ httpProbe }

var _ Prober = (*kserveProber)(nil)

// kserveCanaryID identifies the probe's requests in the server's logs.
const kserveCanaryID = "backflip-canary"

func (p *kserveProber) Probe(ctx context.Context) Observation {
	var v probeVerdict
	server, err := p.call(ctx, http.MethodGet, "/v2/health/ready", nil)
	if err != nil {
		v.fail(err)
		return v.finish(false)
	}
	model := p.modelPath()
	ready, err := p.call(ctx, http.MethodGet, model+"/ready", nil)
	if err == nil && ready.ok() {
		v.obs.Loaded, v.obs.Ready = true, true
	} else {
		if !server.ok() {
			v.fail(server.statusErr())
		}
		if err == nil {
			err = stepErr(ready.step, nil, "model not ready (%d %s)", ready.status, http.StatusText(ready.status))
		}
		v.fail(err)
		return v.finish(false)
	}
	input, err := p.bytesInput(ctx, model)
	if err != nil {
		v.fail(err)
		return v.finish(false)
	}
	v.obs.CanaryLatency, err = p.canary(ctx, "POST "+model+"/infer", func(ctx context.Context) error {
		return p.infer(ctx, model, input)
	})
	if err != nil {
		v.fail(err)
	}
	return v.finish(true)
}

// modelPath is /v2/models/{m}[/versions/{v}], path-escaped.
func (p *kserveProber) modelPath() string {
	path := "/v2/models/" + url.PathEscape(p.cfg.Model)
	if p.cfg.ModelVersion != "" {
		path += "/versions/" + url.PathEscape(p.cfg.ModelVersion)
	}
	return path
}

// kserveTensor is a $metadata_tensor / $request_input of the protocol.
type kserveTensor struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
	Data     []any   `json:"data,omitempty"`
}

// bytesInput returns the model's first BYTES input, shaped to hold one
// element: variable dimensions (-1) become 1.
func (p *kserveProber) bytesInput(ctx context.Context, model string) (kserveTensor, error) {
	r, err := p.call(ctx, http.MethodGet, model, nil)
	if err != nil {
		return kserveTensor{}, err
	}
	if !r.ok() {
		return kserveTensor{}, r.statusErr()
	}
	var md struct {
		Inputs []kserveTensor `json:"inputs"`
	}
	if err := r.decode(&md); err != nil {
		return kserveTensor{}, err
	}
	for _, in := range md.Inputs {
		if in.Datatype != "BYTES" || in.Name == "" {
			continue
		}
		shape := make([]int64, 0, len(in.Shape))
		for _, d := range in.Shape {
			if d < 0 {
				d = 1
			}
			if d != 1 {
				return kserveTensor{}, stepErr(r.step, nil, "BYTES input %q has shape %v; the canary sends one prompt", clipLine(in.Name), in.Shape)
			}
			shape = append(shape, d)
		}
		if len(shape) == 0 {
			shape = []int64{1}
		}
		return kserveTensor{Name: in.Name, Datatype: "BYTES", Shape: shape}, nil
	}
	return kserveTensor{}, stepErr(r.step, nil, "model has no BYTES input to carry the canary prompt")
}

// infer sends the prompt as the input tensor and wants output tensors
// back. The request follows required_api.md's $inference_request; outputs
// are not named, so the server returns all of them.
func (p *kserveProber) infer(ctx context.Context, model string, input kserveTensor) error {
	input.Data = []any{p.cfg.CanaryPrompt}
	req := struct {
		ID     string         `json:"id"`
		Inputs []kserveTensor `json:"inputs"`
	}{kserveCanaryID, []kserveTensor{input}}
	r, err := p.call(ctx, http.MethodPost, model+"/infer", req)
	if err != nil {
		return err
	}
	if !r.ok() {
		return r.statusErr()
	}
	var resp struct {
		Outputs []struct {
			Name string `json:"name"`
		} `json:"outputs"`
	}
	if err := r.decode(&resp); err != nil {
		return err
	}
	if len(resp.Outputs) == 0 {
		return stepErr(r.step, nil, "reply has no outputs")
	}
	return nil
}
