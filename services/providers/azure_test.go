package providers

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

func TestAzureAgainstFake(t *testing.T) {
	const secret = "azure-secret-key-5678"
	chat := messages.EndpointChatCompletions
	cases := []struct {
		name       string
		cfg        fakeprovider.Config
		before     int
		endpoint   messages.Endpoint
		apiVersion string
		body       []byte
		want       expect
		limits     func(t *testing.T, l RateLimits)
	}{
		{
			name: "chat success",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {RPM: 600, TPM: 60_000}}},
			body: helloChat(`,"max_tokens":5`), endpoint: chat,
			want: expect{status: 200, class: Success, usage: [3]int64{9, 5, 14}},
			limits: func(t *testing.T, l RateLimits) {
				// Azure sends remaining counts only.
				if l.RemainingRequests != 9 || l.RemainingTokens != 1000-14 || l.LimitRequests != -1 || l.LimitTokens != -1 ||
					l.ResetRequests != 0 || l.RetryAfter != 0 {
					t.Errorf("limits %+v", l)
				}
			},
		},
		{
			name: "embeddings success, with an api-version",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {TPM: 60_000}}},
			body: []byte(`{"input":"abcdefghi"}`), endpoint: messages.EndpointEmbeddings, apiVersion: "2025-01-01-preview",
			want: expect{status: 200, class: Success, usage: [3]int64{3, 0, 3}},
		},
		{
			name:   "429 with retry-after-ms",
			cfg:    fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {RPM: 600, TPM: 6000}}}, // 100 tokens per second
			before: 1, body: helloChat(`,"max_tokens":80`), endpoint: chat,
			want: expect{status: 429, class: RateLimited, errorCode: "429", retryAfter: 140 * time.Millisecond},
			limits: func(t *testing.T, l RateLimits) {
				if l.RemainingTokens != 75 || l.Wait("") != 140*time.Millisecond {
					t.Errorf("limits %+v", l)
				}
			},
		},
		{
			name: "insufficient_quota",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {InsufficientQuota: true}}},
			body: helloChat(""), endpoint: chat,
			want: expect{status: 429, class: QuotaExhausted, errorCode: "insufficient_quota"},
		},
		{
			name: "5xx",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {}}, ErrorRate: 1, ErrorStatus: 500},
			body: helloChat(""), endpoint: chat,
			want: expect{status: 500, class: Unavailable, errorType: "server_error"},
		},
		{
			name: "unknown deployment is rejected",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {}}, Models: []string{"other"}},
			body: helloChat(""), endpoint: chat,
			want: expect{status: 404, class: Rejected, errorCode: "DeploymentNotFound"},
		},
		{
			name: "wrong key is rejected",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{"another": {}}},
			body: helloChat(""), endpoint: chat,
			want: expect{status: 401, class: Rejected, errorCode: "401"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t, tc.cfg)
			req := Request{Endpoint: tc.endpoint, Body: tc.body, Model: "my-gpt4o", BaseURL: f.url + "/", APIVersion: tc.apiVersion, Secret: secret}
			for range tc.before {
				if _, err := f.do("azure", req); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := f.do("azure", req)
			if err != nil {
				t.Fatal(err)
			}
			tc.want.check(t, resp)
			if tc.limits != nil {
				tc.limits(t, resp.Limits)
			}
			w := f.last()
			op := "chat/completions"
			if tc.endpoint == messages.EndpointEmbeddings {
				op = "embeddings"
			}
			version := tc.apiVersion
			if version == "" {
				version = DefaultAzureAPIVersion
			}
			if w.url.Path != "/openai/deployments/my-gpt4o/"+op || w.url.Query().Get("api-version") != version || len(w.url.Query()) != 1 {
				t.Errorf("sent to %s", w.url)
			}
			if !bytes.Equal(w.body, tc.body) {
				t.Errorf("sent body %s, want the call's byte for byte", w.body)
			}
			if w.header.Get("Authorization") != "" {
				t.Error("Azure got an Authorization header")
			}
			f.checkSecret(secret, "api-key", "")
			noSecretIn(t, secret, resp, err)
		})
	}
}

func TestAzureURLEscapesTheDeployment(t *testing.T) {
	u, err := azureURL(Request{Endpoint: messages.EndpointChatCompletions, Model: "a b/../c?x", BaseURL: "https://r.openai.azure.com", APIVersion: "v&x=1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://r.openai.azure.com/openai/deployments/a%20b%2F..%2Fc%3Fx/chat/completions?api-version=v%26x%3D1"; u != want {
		t.Fatalf("got  %s\nwant %s", u, want)
	}
	if _, err := azureURL(Request{Endpoint: messages.EndpointChatCompletions, BaseURL: "https://r"}); err == nil || !strings.Contains(err.Error(), "deployment") {
		t.Fatalf("no model: %v", err)
	}
}

// The fake refuses a request without api-version, as Azure does; the
// adapter never sends one.
func TestAzureFakeNeedsAPIVersion(t *testing.T) {
	f := newFakeAPI(t, fakeprovider.Config{AcceptAnyKey: true})
	req, _ := http.NewRequest(http.MethodPost, f.url+"/openai/deployments/d/chat/completions", bytes.NewReader(helloChat("")))
	req.Header.Set("api-key", "k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d", resp.StatusCode)
	}
}
