package test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// Calls reach Azure OpenAI and Anthropic deployments through sluice, in
// their own dialects: URLs, authentication, versions, usage, and limits.
func TestEveryDialectThroughSluice(t *testing.T) {
	yaml := func(fakeURL string) string {
		return fmt.Sprintf(`pools:
  gpt-az:
    deployments:
      - {id: az-1, provider: azure, base_url: %q, region: us-east, model: my-gpt-deployment, key: AZ_KEY, rpm: 600, tpm: 100000}
  claude:
    deployments:
      - {id: an-1, provider: anthropic, base_url: %q, region: us-east, model: claude-sonnet-4, key: AN_KEY, rpm: 600, tpm: 100000}
  gpt:
    deployments:
      - {id: oa-1, provider: openai, base_url: %q, region: eu-west, key: OA_KEY, rpm: 600, tpm: 100000}
teams:
  demo: {}
`, fakeURL, fakeURL+"/v1", fakeURL+"/v1")
	}
	s := startStack(t, stackOptions{yaml: yaml})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	calls := map[string]string{
		"azure":     `{"id":"azure","model":"gpt-az","body":{"messages":[{"role":"user","content":"hi"}],"max_tokens":10}}`,
		"anthropic": `{"id":"anthropic","model":"claude","endpoint":"/v1/messages","body":{"max_tokens":10,"system":"be brief","messages":[{"role":"user","content":"hi"}]}}`,
		"openai":    `{"id":"openai","model":"gpt","body":{"messages":[{"role":"user","content":"hi"}],"max_tokens":10}}`,
		// A chat call cannot go to a pool served only by Anthropic.
		"wrong-endpoint": `{"id":"wrong-endpoint","model":"claude","body":{"messages":[{"role":"user","content":"hi"}]}}`,
	}
	var ids []string
	for id, body := range calls {
		ids = append(ids, id)
		if err := publishCall(t.Context(), js, "demo", "standard", id, body); err != nil {
			t.Fatal(err)
		}
	}
	log.waitFor(t, ids, 30*time.Second)
	got := log.exactlyOnce(t, ids)
	for _, id := range []string{"azure", "anthropic", "openai"} {
		r := got[id]
		if r.Status != messages.StatusOK || r.Usage == nil || r.Usage.TotalTokens != r.Usage.PromptTokens+r.Usage.CompletionTokens || r.Usage.PromptTokens == 0 {
			t.Errorf("%s: %+v %+v", id, r.Error, r.Usage)
		}
	}
	var msg struct {
		Type    string `json:"type"`
		Content []struct {
			Type string `json:"type"`
		} `json:"content"`
		Model string `json:"model"`
	}
	if err := json.Unmarshal(got["anthropic"].Body, &msg); err != nil || msg.Type != "message" || msg.Model != "claude-sonnet-4" {
		t.Errorf("anthropic body: %s", got["anthropic"].Body)
	}
	if r := got["wrong-endpoint"]; r.Error == nil || r.Error.Code != messages.CodeInvalidRequest || r.Error.Field != "endpoint" {
		t.Errorf("a chat call to an Anthropic-only pool: %+v", r.Error)
	}
	// Each provider saw its own key in its own header, once per call.
	secrets := devstack.DevSecrets(s.Shared.Load())
	st := s.Fake.Stats()
	for _, key := range []string{"AZ_KEY", "AN_KEY", "OA_KEY"} {
		if st.Keys[secrets[key]].Served != 1 {
			t.Errorf("key %s served %d calls, want 1", key, st.Keys[secrets[key]].Served)
		}
	}
}

// Anthropic's rate-limit headers (RFC 3339 resets) teach sluice a limit
// below the configured one, as OpenAI's do.
func TestAnthropicHeadersAreLearned(t *testing.T) {
	yaml := func(fakeURL string) string {
		return fmt.Sprintf(`pools:
  claude:
    deployments:
      - {id: an-1, provider: anthropic, base_url: %q, region: us-east, key: AN_KEY, rpm: 6000, tpm: 10000000}
teams:
  demo: {}
`, fakeURL+"/v1")
	}
	s := startStack(t, stackOptions{yaml: yaml})
	secrets := devstack.DevSecrets(s.Shared.Load())
	if err := s.Fake.SetKey(secrets["AN_KEY"], fakeprovider.KeyConfig{RPM: 600, TPM: 10000000}); err != nil {
		t.Fatal(err)
	}
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	ids := publishPaced(t, js, 60, 60, func(id string) string {
		return `{"id":"` + id + `","model":"claude","endpoint":"/v1/messages","body":{"max_tokens":5,"messages":[{"role":"user","content":"x"}]},"timeout_ms":60000}`
	})
	log.waitFor(t, ids, 60*time.Second)
	for id, r := range log.exactlyOnce(t, ids) {
		if r.Status != messages.StatusOK {
			t.Errorf("%s: %+v", id, r.Error)
		}
	}
	kv, err := js.KeyValue(t.Context(), messages.BucketHealth)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(t.Context(), "an-1")
	if err != nil {
		t.Fatalf("nothing learned about an-1: %v", err)
	}
	var h messages.DeploymentHealth
	if err := json.Unmarshal(e.Value(), &h); err != nil || h.LearnedRPM != 600 {
		t.Fatalf("learned %s; want learned_rpm 600 from anthropic-ratelimit-requests-limit", e.Value())
	}
}
