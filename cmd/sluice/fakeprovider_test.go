package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
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

func TestFakeProviderWindows(t *testing.T) {
	addr := freeAddr(t)
	url := "http://" + addr
	// 4 RPM counted over the last minute, half of it used by someone else:
	// two calls, then a refusal until the minute frees, while the headers
	// still say 4.
	fake := startCommand(t, runFakeProvider, "--addr", addr, "--rpm", "4", "--enforce", "windows", "--windows", "1m",
		"--retry-after", "reset", "--other-use", "0.5")
	fake.waitOutput(t, "fake provider listening on "+url)
	if out := fake.stdout.String(); !strings.Contains(out, "sliding windows of 1m0s, retry-after reset, 0.5 of each used by another consumer") {
		t.Errorf("the banner does not describe the enforcement:\n%s", out)
	}
	for i, want := range []string{"1", "0"} {
		resp, body := postChat(t, url, "sk-one")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("call %d: %s\n%s", i, resp.Status, body)
		}
		if got := resp.Header.Get("x-ratelimit-limit-requests"); got != "4" {
			t.Errorf("call %d: x-ratelimit-limit-requests %q, want the configured 4", i, got)
		}
		if got := resp.Header.Get("x-ratelimit-remaining-requests"); got != want {
			t.Errorf("call %d: x-ratelimit-remaining-requests %q, want %s of the 2 left by the other consumer", i, got, want)
		}
	}
	// About the minute, whatever the machine's speed: the refusal comes
	// less than a minute after the second call.
	resp, body := postChat(t, url, "sk-one")
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != http.StatusTooManyRequests || err != nil || secs < 1 || secs > 60 {
		t.Errorf("third call: %s, Retry-After %q; want 429 and up to 60 (the minute to free)\n%s", resp.Status, resp.Header.Get("Retry-After"), body)
	}
	if err := fake.stop(t); err != nil {
		t.Errorf("fakeprovider returned %v after being cancelled, want nil", err)
	}
}

func TestFakeProviderBadFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string // in stderr
	}{
		{[]string{"--error-rate", "2"}, []string{"ErrorRate"}},
		{[]string{"--enforce", "leaky"}, []string{`config.Enforce "leaky"`}},
		{[]string{"--other-use", "1"}, []string{"other_use 1 outside [0, 1)"}},
		{[]string{"--windows", "1s", "--retry-after", "reset"}, []string{"--windows applies to --enforce windows only", "--retry-after applies"}},
		{[]string{"--enforce", "windows", "--windows", "1s,soon,"}, []string{`--windows: "soon" is not a duration`, `--windows: "" is not`}},
		{[]string{"--enforce", "windows", "--windows", "1s", "--tpm", "30"}, []string{"tpm 30 is no whole token per 1s"}},
		{[]string{"--enforce", "windows", "--retry-after", "later"}, []string{`config.RetryAfter "later"`}},
	} {
		code, _, stderr := runExecute(append([]string{"fakeprovider", "--addr", freeAddr(t)}, tt.args...)...)
		if code != 1 || !strings.Contains(stderr, "sluice fakeprovider: ") {
			t.Errorf("%v: exit code %d, want 1 with an error\n%s", tt.args, code, stderr)
		}
		for _, w := range tt.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v: stderr does not say %q:\n%s", tt.args, w, stderr)
			}
		}
	}
}

// TestFakeProviderHelp: -h and --help print the flags on stdout and exit
// 0, as every sluice command does on a request for help.
func TestFakeProviderHelp(t *testing.T) {
	for _, h := range []string{"-h", "--help"} {
		code, stdout, stderr := runExecute("fakeprovider", h)
		if code != 0 || stderr != "" {
			t.Errorf("%s: exit code %d, stderr %q; want 0 and nothing", h, code, stderr)
		}
		for _, f := range []string{"-enforce", "-windows", "-retry-after", "-other-use", "-quantum", "-rpm", "-tpm"} {
			if !strings.Contains(stdout, f) {
				t.Errorf("%s: usage does not list %s:\n%s", h, f, stdout)
			}
		}
	}
}
