package agent

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// NewProber returns the prober for cfg.Kind (openai, kserve-v2, tgi,
// ollama), talking to cfg.URL through client. The client should have no
// overall timeout of its own: each probe's context sets the deadline (a
// nil client means a plain &http.Client{}). It checks what the prober
// needs — kind, URL, model, canary prompt and budget — and returns an
// error naming the field otherwise; the config file's validation is
// stricter still.
func NewProber(cfg ServerConfig, client *http.Client) (Prober, error) {
	if err := checkProberConfig(cfg); err != nil {
		return nil, fmt.Errorf("prober for %s %s: %w", cfg.Kind, cfg.URL, err)
	}
	if client == nil {
		client = &http.Client{}
	}
	base := httpProbe{
		cfg:    cfg,
		client: client,
		base:   strings.TrimRight(cfg.URL, "/"),
		now:    time.Now,
	}
	switch cfg.Kind {
	case KindOpenAI:
		return &openAIProber{base}, nil
	case KindKServeV2:
		return &kserveProber{base}, nil
	case KindTGI:
		return &tgiProber{base}, nil
	default: // KindOllama; checkProberConfig refused the rest
		return &ollamaProber{base}, nil
	}
}

func checkProberConfig(cfg ServerConfig) error {
	switch cfg.Kind {
	case KindOpenAI, KindKServeV2, KindTGI, KindOllama:
	default:
		return fmt.Errorf("kind: must be %s, %s, %s or %s, got %q", KindOpenAI, KindKServeV2, KindTGI, KindOllama, cfg.Kind)
	}
	u, err := url.Parse(cfg.URL)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "":
		return fmt.Errorf("url: want an http(s) URL with a host, got %q", cfg.URL)
	case u.User != nil:
		return errors.New("url: must not hold credentials")
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("url: must have no query or fragment, got %q", cfg.URL)
	}
	if strings.TrimSpace(cfg.Model) == "" {
		return errors.New("model: required")
	}
	if cfg.CanaryPrompt == "" {
		return errors.New("canary_prompt: required")
	}
	if time.Duration(cfg.Budget) <= 0 {
		return fmt.Errorf("budget: must be positive, got %v", time.Duration(cfg.Budget))
	}
	return nil
}
