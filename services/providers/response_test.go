package providers

import (
	"reflect"
	"testing"

	"github.com/sluicehq/sluice/messages"
)

func TestReadBodies(t *testing.T) {
	u := func(p, c, total int64) *messages.Usage {
		return &messages.Usage{PromptTokens: p, CompletionTokens: c, TotalTokens: total}
	}
	cachedU := func(p, c, total, cached int64) *messages.Usage {
		out := u(p, c, total)
		out.PromptTokensDetails = &messages.PromptTokensDetails{CachedTokens: cached}
		return out
	}
	cases := []struct {
		name  string
		read  func([]byte) verdict
		body  string
		usage *messages.Usage
		typ   string
		code  string
		quota bool
	}{
		{"openai usage", readOpenAIBody, `{"usage":{"prompt_tokens":9,"completion_tokens":16,"total_tokens":25}}`, u(9, 16, 25), "", "", false},
		{"openai total missing", readOpenAIBody, `{"usage":{"prompt_tokens":9,"completion_tokens":16}}`, u(9, 16, 25), "", "", false},
		{"openai total too small", readOpenAIBody, `{"usage":{"prompt_tokens":9,"completion_tokens":16,"total_tokens":1}}`, u(9, 16, 25), "", "", false},
		{"openai negative usage dropped", readOpenAIBody, `{"usage":{"prompt_tokens":-9,"completion_tokens":16,"total_tokens":7}}`, nil, "", "", false},
		{"openai huge usage dropped", readOpenAIBody, `{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":1}}`, nil, "", "", false},
		{"openai float usage dropped", readOpenAIBody, `{"usage":{"prompt_tokens":1.5}}`, nil, "", "", false},
		{"openai usage survives a strange error", readOpenAIBody, `{"usage":{"prompt_tokens":1,"completion_tokens":1},"error":7}`, u(1, 1, 2), "", "", false},
		{"openai 429", readOpenAIBody, `{"error":{"message":"slow","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`, nil, "tokens", "rate_limit_exceeded", false},
		{"openai quota", readOpenAIBody, `{"error":{"message":"pay","type":"insufficient_quota","code":"insufficient_quota"}}`, nil, "insufficient_quota", "insufficient_quota", true},
		{"azure 429", readOpenAIBody, `{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation ..."}}`, nil, "", "429", false},
		{"azure quota", readOpenAIBody, `{"error":{"code":"insufficient_quota","message":"spent"}}`, nil, "", "insufficient_quota", true},
		{"azure content filter", readOpenAIBody, `{"error":{"message":"filtered","type":null,"param":"prompt","code":"content_filter","status":400}}`, nil, "", "content_filter", false},
		{"not JSON", readOpenAIBody, `<html>bad gateway</html>`, nil, "", "", false},
		{"anthropic usage", readAnthropicBody, `{"type":"message","usage":{"input_tokens":20,"output_tokens":5}}`, u(20, 5, 25), "", "", false},
		{"anthropic cache counts as input", readAnthropicBody,
			`{"usage":{"input_tokens":20,"cache_creation_input_tokens":100,"cache_read_input_tokens":1000,"output_tokens":5}}`, cachedU(1120, 5, 1125, 1000), "", "", false},
		{"anthropic negative cache dropped", readAnthropicBody, `{"usage":{"input_tokens":20,"cache_read_input_tokens":-100,"output_tokens":5}}`, nil, "", "", false},
		{"anthropic overflow dropped", readAnthropicBody,
			`{"usage":{"input_tokens":9223372036854775807,"cache_read_input_tokens":9223372036854775807,"output_tokens":5}}`, nil, "", "", false},
		{"anthropic huge output dropped", readAnthropicBody, `{"usage":{"input_tokens":1,"output_tokens":9223372036854775807}}`, nil, "", "", false},
		{"anthropic 429", readAnthropicBody, `{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}`, nil, "rate_limit_error", "rate_limit_error", false},
		{"anthropic overloaded", readAnthropicBody, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, nil, "overloaded_error", "overloaded_error", false},
		{"anthropic credit", readAnthropicBody,
			`{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}`, nil, "invalid_request_error", "invalid_request_error", true},
		{"anthropic billing", readAnthropicBody, `{"type":"error","error":{"type":"billing_error","message":"card declined"}}`, nil, "billing_error", "billing_error", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.read([]byte(tc.body))
			if !reflect.DeepEqual(v.usage, tc.usage) {
				t.Errorf("usage %+v, want %+v", v.usage, tc.usage)
			}
			if v.errorType != tc.typ || v.errorCode != tc.code || v.quota != tc.quota {
				t.Errorf("type %q code %q quota %v; want %q %q %v", v.errorType, v.errorCode, v.quota, tc.typ, tc.code, tc.quota)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		status int
		quota  bool
		want   Class
	}{
		{200, false, Success},
		{201, true, Success},
		{429, false, RateLimited},
		{429, true, QuotaExhausted},
		{400, true, QuotaExhausted}, // Anthropic's credit balance
		{400, false, Rejected},
		{401, false, Rejected},
		{404, false, Rejected},
		{408, false, Unavailable},
		{500, false, Unavailable},
		{503, true, Unavailable},
		{529, false, Unavailable},
		{302, false, Rejected},
	}
	for _, tc := range cases {
		if got := classify(tc.status, tc.quota); got != tc.want {
			t.Errorf("classify(%d, %v) = %v, want %v", tc.status, tc.quota, got, tc.want)
		}
	}
}
