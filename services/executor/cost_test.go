package executor

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/providers"
)

// pricedConfig has an OpenAI and an Anthropic deployment, priced by their
// pools (the Anthropic one with a per-request price of its own), and an
// unpriced one.
const pricedConfig = `
prices: {currency: EUR}
pools:
  gpt:
    prices: {input: 2.5, cached_input: 1.25, output: 10}
    deployments:
      - {id: oa, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K1, rpm: 60, tpm: 100000}
  claude:
    prices: {input: 3, cached_input: 0.3, output: 15}
    deployments:
      - {id: an, provider: anthropic, base_url: "http://127.0.0.1:1/v1", region: r1, key: K2, rpm: 60, tpm: 100000, prices: {per_request: 0.001}}
  free:
    deployments:
      - {id: self, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K3, rpm: 60, tpm: 100000}
teams:
  t: {}
`

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }

// What OpenAI and Anthropic answer, read by their adapters, is priced
// part by part at the deployment's rates: cached prompt tokens at the
// cached rate, the rest at the input rate, completions at the output
// rate, plus the request.
func TestCostOfProviderAnswers(t *testing.T) {
	cfg, err := config.Parse([]byte(pricedConfig))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, deployment string
		endpoint         messages.Endpoint
		answer           string
		input, cached    float64 // the parts of the cost
		output, request  float64
	}{
		{"openai chat", "oa", messages.EndpointChatCompletions,
			`{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920}}}`,
			86 * 2.5 / 1e6, 1920 * 1.25 / 1e6, 300 * 10.0 / 1e6, 0},
		{"openai responses", "oa", messages.EndpointResponses,
			`{"id":"resp_1","object":"response","output":[],"usage":{"input_tokens":1500,"input_tokens_details":{"cached_tokens":1024},"output_tokens":80,"total_tokens":1580}}`,
			476 * 2.5 / 1e6, 1024 * 1.25 / 1e6, 80 * 10.0 / 1e6, 0},
		{"openai embeddings", "oa", messages.EndpointEmbeddings,
			`{"object":"list","data":[],"usage":{"prompt_tokens":400,"total_tokens":400}}`,
			400 * 2.5 / 1e6, 0, 0, 0},
		{"anthropic messages", "an", messages.EndpointMessages,
			`{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":50,"cache_creation_input_tokens":200,"cache_read_input_tokens":1000,"output_tokens":75}}`,
			250 * 3.0 / 1e6, 1000 * 0.3 / 1e6, 75 * 15.0 / 1e6, 0.001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, tc.answer)
			}))
			defer srv.Close()
			dep, _ := cfg.Deployment(tc.deployment)
			adapter, err := providers.For(dep.Provider)
			if err != nil {
				t.Fatal(err)
			}
			body := `{"model":"m","max_tokens":400,"messages":[{"role":"user","content":"hi"}]}`
			switch tc.endpoint {
			case messages.EndpointResponses:
				body = `{"model":"m","input":"hi"}`
			case messages.EndpointEmbeddings:
				body = `{"model":"m","input":"hi"}`
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := adapter.Do(ctx, nil, providers.Request{Endpoint: tc.endpoint, Body: []byte(body), Model: "m", BaseURL: srv.URL + "/v1", Secret: "k"})
			if err != nil || resp.Usage == nil {
				t.Fatalf("answer: %v, usage %+v", err, resp)
			}
			w := &messages.Work{Ticket: messages.Ticket{Call: messages.CallRequest{Endpoint: tc.endpoint}}, ReservedTokens: 5000}
			c := costOf(dep, w, resp.Usage)
			if c == nil {
				t.Fatal("no cost")
			}
			total := tc.input + tc.cached + tc.output + tc.request
			if c.Currency != "EUR" || c.Estimated || !near(c.Input, tc.input) || !near(c.CachedInput, tc.cached) || !near(c.Output, tc.output) ||
				!near(c.Request, tc.request) || !near(c.Total, total) {
				t.Errorf("cost %+v, want EUR input %g cached %g output %g request %g total %g", c, tc.input, tc.cached, tc.output, tc.request, total)
			}
		})
	}
}

// An answer without usage costs its reservation at the highest rate,
// marked estimated, never 0; requests providers do not charge cost 0;
// an unpriced deployment's answers carry no cost.
func TestCostWithoutUsage(t *testing.T) {
	cfg, err := config.Parse([]byte(pricedConfig))
	if err != nil {
		t.Fatal(err)
	}
	work := func(endpoint messages.Endpoint, reserved int64) *messages.Work {
		return &messages.Work{Ticket: messages.Ticket{Call: messages.CallRequest{Endpoint: endpoint}}, ReservedTokens: reserved}
	}
	oa, _ := cfg.Deployment("oa")
	an, _ := cfg.Deployment("an")
	self, _ := cfg.Deployment("self")
	c := costOf(oa, work(messages.EndpointChatCompletions, 1234), nil)
	if c == nil || !c.Estimated || c.ReservedTokens != 1234 || !near(c.Total, 1234*10.0/1e6) || c.Currency != "EUR" {
		t.Errorf("openai answer without usage: %+v, want 1234 reserved tokens at the output rate, estimated", c)
	}
	c = costOf(an, work(messages.EndpointMessages, 1000), nil)
	if c == nil || !c.Estimated || !near(c.Total, 1000*15.0/1e6+0.001) || !near(c.Request, 0.001) {
		t.Errorf("anthropic answer without usage: %+v, want the reservation at 15 plus the request", c)
	}
	for _, ep := range []messages.Endpoint{messages.EndpointCountTokens, messages.EndpointResponseGet, messages.EndpointResponseDelete} {
		if c := costOf(an, work(ep, 0), nil); c == nil || c.Total != 0 || c.Estimated {
			t.Errorf("%s: %+v, want a cost of 0", ep, c)
		}
	}
	if c := costOf(self, work(messages.EndpointChatCompletions, 100), &messages.Usage{PromptTokens: 5, TotalTokens: 5}); c != nil {
		t.Errorf("an unpriced deployment's answer: %+v, want no cost", c)
	}
}
