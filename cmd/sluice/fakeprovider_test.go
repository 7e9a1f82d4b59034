package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func postChat(t *testing.T, url, key string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestFakeProvider(t *testing.T) {
	addr := freeAddr(t)
	url := "http://" + addr
	// One request per minute per key, in plain per-minute buckets: the
	// second call on a key is refused whatever the machine's speed.
	fake := startCommand(t, runFakeProvider, "--addr", addr, "--rpm", "1", "--quantum", "1m")
	fake.waitOutput(t, "fake provider listening on "+url)

	resp, body := postChat(t, url, "sk-one")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/chat/completions with a key: %s\n%s", resp.Status, body)
	}
	var completion struct {
		Object  string            `json:"object"`
		Choices []json.RawMessage `json:"choices"`
		Usage   struct {
			TotalTokens int `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &completion); err != nil || completion.Object != "chat.completion" || len(completion.Choices) == 0 || completion.Usage.TotalTokens == 0 {
		t.Errorf("not a chat completion (err %v):\n%s", err, body)
	}
	if resp.Header.Get("x-ratelimit-limit-requests") != "1" {
		t.Errorf("x-ratelimit-limit-requests %q, want the --rpm 1", resp.Header.Get("x-ratelimit-limit-requests"))
	}

	if resp, body := postChat(t, url, "sk-one"); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second call on a 1 RPM key: %s, Retry-After %q; want 429 with Retry-After\n%s", resp.Status, resp.Header.Get("Retry-After"), body)
	}
	// Any key is accepted, each with buckets of its own.
	if resp, body := postChat(t, url, "sk-two"); resp.StatusCode != http.StatusOK {
		t.Errorf("first call on another key: %s\n%s", resp.Status, body)
	}
	if resp, body := postChat(t, url, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("call without a key: %s, want 401\n%s", resp.Status, body)
	}

	if err := fake.stop(t); err != nil {
		t.Errorf("fakeprovider returned %v after being cancelled, want nil", err)
	}
	refused(t, "the fake provider", addr)
}

func TestFakeProviderBadFlags(t *testing.T) {
	code, _, stderr := runExecute("fakeprovider", "--addr", freeAddr(t), "--error-rate", "2")
	if code != 1 || !strings.Contains(stderr, "sluice fakeprovider: ") || !strings.Contains(stderr, "ErrorRate") {
		t.Errorf("--error-rate 2: exit code %d, want 1 with an error\n%s", code, stderr)
	}
}
