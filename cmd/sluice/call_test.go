package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
)

// decodeResult decodes what `sluice call` printed, failing if it is not
// one JSON result.
func decodeResult(t *testing.T, stdout string) messages.Result {
	t.Helper()
	var r messages.Result
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("stdout is not a JSON result: %v\n%s", err, stdout)
	}
	if dec.More() {
		t.Fatalf("stdout holds more than one JSON value:\n%s", stdout)
	}
	return r
}

// checkOK checks a successful chat completion result of team demo.
func checkOK(t *testing.T, r messages.Result) {
	t.Helper()
	if r.Status != messages.StatusOK || r.Error != nil {
		t.Fatalf("result is not ok: status %q, error %+v", r.Status, r.Error)
	}
	if r.Team != "demo" || r.Tier != messages.Tier("standard") || r.Model != "gpt-4o-mini" {
		t.Errorf("result is for team %q tier %q model %q, want demo standard gpt-4o-mini", r.Team, r.Tier, r.Model)
	}
	if r.HTTPStatus != 200 || r.Usage == nil || r.Usage.TotalTokens <= 0 {
		t.Errorf("result has http_status %d and usage %+v, want 200 and some tokens", r.HTTPStatus, r.Usage)
	}
	var body struct {
		Choices []json.RawMessage `json:"choices"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil || len(body.Choices) == 0 {
		t.Errorf("result body is not a chat completion (err %v): %s", err, r.Body)
	}
	if r.Deployment == "" || r.Region == "" || r.Attempts < 1 {
		t.Errorf("result does not say where it ran: deployment %q region %q attempts %d", r.Deployment, r.Region, r.Attempts)
	}
}

func TestCall(t *testing.T) {
	stack := startStack(t, true)
	server := stack.ClientURL()

	t.Run("prompt", func(t *testing.T) {
		code, stdout, stderr := runExecute("call", "--server", server, "--team", "demo", "--tier", "standard",
			"--model", "gpt-4o-mini", "--prompt", "hi", "--id", "cli-prompt-1", "--max-tokens", "8")
		if code != 0 {
			t.Fatalf("exit code %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		r := decodeResult(t, stdout)
		checkOK(t, r)
		if r.ID != "cli-prompt-1" {
			t.Errorf("result id %q, want the --id cli-prompt-1", r.ID)
		}
		if r.Usage != nil && r.Usage.CompletionTokens > 8 {
			t.Errorf("completion used %d tokens, more than --max-tokens 8", r.Usage.CompletionTokens)
		}
	})

	// --prompt builds the body each endpoint reads: a prompt for legacy
	// completions, an input for embeddings, messages with the max_tokens
	// Anthropic requires for Messages.
	for _, tc := range []struct{ endpoint, model string }{
		{string(messages.EndpointCompletions), "gpt-4o-mini"},
		{string(messages.EndpointEmbeddings), "text-embedding-3-small"},
		{string(messages.EndpointMessages), "claude-haiku-4-5"},
		{string(messages.EndpointResponses), "gpt-4o-mini"},
	} {
		t.Run("prompt to "+tc.endpoint, func(t *testing.T) {
			code, stdout, stderr := runExecute("call", "--server", server, "--team", "demo",
				"--model", tc.model, "--endpoint", tc.endpoint, "--prompt", "hi")
			if code != 0 {
				t.Fatalf("exit code %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			if r := decodeResult(t, stdout); r.Status != messages.StatusOK || r.Model != tc.model {
				t.Fatalf("result %s for model %q (%+v), want ok for %s", r.Status, r.Model, r.Error, tc.model)
			}
		})
	}

	t.Run("body file", func(t *testing.T) {
		// No --model: the pool is the body's model.
		path := filepath.Join(t.TempDir(), "body.json")
		body := `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello"}],"max_tokens":16,"temperature":0}`
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runExecute("call", "--server", server, "--team", "demo", "--tier", "standard", "--body", path)
		if code != 0 {
			t.Fatalf("exit code %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		r := decodeResult(t, stdout)
		checkOK(t, r)
	})

	t.Run("body from stdin", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "stdin.json")
		if err := os.WriteFile(path, []byte(`{"messages":[{"role":"user","content":"hi"}]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		saved := os.Stdin
		os.Stdin = f
		defer func() { os.Stdin = saved }()
		code, stdout, stderr := runExecute("call", "--server", server, "--team", "demo", "--model", "gpt-4o-mini", "--body", "-")
		if code != 0 {
			t.Fatalf("exit code %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		checkOK(t, decodeResult(t, stdout))
	})

	// An error result is printed as the result, and exits 1 without an
	// error line: the result already says what went wrong.
	for _, tc := range []struct {
		name string
		args []string
		code messages.Code
	}{
		{"unknown model", []string{"--team", "demo", "--model", "nope", "--prompt", "hi"}, messages.CodeUnknownModel},
		{"unknown team", []string{"--team", "nobody", "--model", "gpt-4o-mini", "--prompt", "hi"}, messages.CodeForbidden},
		{"invalid body", []string{"--team", "demo", "--model", "gpt-4o-mini", "--body", "@array"}, messages.CodeInvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"call", "--server", server}, tc.args...)
			if args[len(args)-1] == "@array" {
				path := filepath.Join(t.TempDir(), "array.json")
				if err := os.WriteFile(path, []byte(`["not", "an", "object"]`), 0o600); err != nil {
					t.Fatal(err)
				}
				args[len(args)-1] = path
			}
			code, stdout, stderr := runExecute(args...)
			if code != 1 {
				t.Errorf("exit code %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			if strings.Contains(stderr, "sluice call:") {
				t.Errorf("stderr has an error line although the result was printed:\n%s", stderr)
			}
			r := decodeResult(t, stdout)
			if r.Status != messages.StatusError || r.Error == nil || r.Error.Code != tc.code {
				t.Errorf("result has status %q and error %+v, want an error with code %s", r.Status, r.Error, tc.code)
			}
		})
	}
}

// Usage errors exit 1 with a message naming the flag, before connecting
// anywhere.
func TestCallUsageErrors(t *testing.T) {
	// Nothing listens here: a test that got as far as connecting fails.
	server := "nats://" + freeAddr(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no team", []string{"--prompt", "hi"}, "-team is required"},
		{"no prompt nor body", []string{"--team", "demo"}, "-prompt or -body is required"},
		{"prompt and body", []string{"--team", "demo", "--prompt", "hi", "--body", "x.json"}, "use -prompt or -body, not both"},
		// Team and id are subject tokens: a dot or a wildcard would publish
		// or await on the wrong subjects, and the call would wait out its
		// whole timeout.
		{"bad id", []string{"--team", "demo", "--prompt", "hi", "--id", "bad.id"}, "-id"},
		{"wildcard id", []string{"--team", "demo", "--prompt", "hi", "--id", "a*"}, "-id"},
		{"bad team", []string{"--team", "a.b", "--prompt", "hi"}, "-team"},
		{"bad tier", []string{"--team", "demo", "--tier", "urgent", "--prompt", "hi"}, "-tier"},
		{"missing body file", []string{"--team", "demo", "--body", filepath.Join(t.TempDir(), "none.json")}, "none.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"call", "--server", server}, tc.args...)
			code, stdout, stderr := runExecute(args...)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if stdout != "" {
				t.Errorf("stdout should be empty, got %q", stdout)
			}
			if !strings.Contains(stderr, "sluice call: ") || !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, stderr)
			}
			if strings.Contains(stderr, "connect to NATS") {
				t.Errorf("a usage error should be found before connecting:\n%s", stderr)
			}
		})
	}

	t.Run("no server", func(t *testing.T) {
		code, stdout, stderr := runExecute("call", "--server", server, "--team", "demo", "--model", "gpt-4o-mini", "--prompt", "hi")
		if code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		if stdout != "" {
			t.Errorf("stdout should be empty, got %q", stdout)
		}
		if !strings.Contains(stderr, "sluice call: connect to NATS at "+server) {
			t.Errorf("stderr does not say it could not connect to %s:\n%s", server, stderr)
		}
	})
}

// With no dispatcher, a call waits until --timeout and then fails with an
// error about the deadline (not a result).
func TestCallTimeout(t *testing.T) {
	stack := startStack(t, false)
	type outcome struct {
		code           int
		stdout, stderr string
	}
	done := make(chan outcome, 1)
	go func() {
		var o outcome
		o.code, o.stdout, o.stderr = runExecute("call", "--server", stack.ClientURL(), "--team", "demo", "--model", "gpt-4o-mini", "--prompt", "hi", "--timeout", "1ms")
		done <- o
	}()
	var o outcome
	select {
	case o = <-done:
	case <-time.After(hang):
		t.Fatalf("sluice call --timeout 1ms still waiting after %s", hang)
	}
	code, stdout, stderr := o.code, o.stdout, o.stderr
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if stdout != "" {
		t.Errorf("stdout should be empty (there is no result), got %q", stdout)
	}
	if !strings.Contains(stderr, "sluice call: ") || !strings.Contains(stderr, "deadline exceeded") {
		t.Errorf("stderr does not report the deadline:\n%s", stderr)
	}
}
