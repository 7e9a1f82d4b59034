package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/client"
)

func runCall(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("call", stderr)
	var nf natsFlags
	nf.register(fs)
	team := fs.String("team", "", "team to call as (required)")
	tier := fs.String("tier", "standard", "critical, high, standard or batch")
	model := fs.String("model", "", "model (pool) to call; default: the body's model")
	prompt := fs.String("prompt", "", "the prompt: a user message (chat, messages, count_tokens), the prompt (completions) or the input (embeddings, responses)")
	bodyPath := fs.String("body", "", "file holding the full request body (JSON); - for stdin")
	names := make([]string, len(messages.Endpoints))
	for i, e := range messages.Endpoints {
		names[i] = string(e)
	}
	endpoint := fs.String("endpoint", string(messages.EndpointChatCompletions), "provider endpoint: "+strings.Join(names, ", "))
	maxTokens := fs.Int("max-tokens", 0, "max_tokens for a --prompt call (0: the pool's default; 1024 for messages, which requires it)")
	id := fs.String("id", "", "call id (default: a new UUID)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait; also the call's deadline")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *team == "" {
		return errors.New("-team is required")
	}
	// Refuse what would publish or await on the wrong subjects, before
	// connecting, rather than wait out the timeout.
	if err := messages.CheckCallAddress(*team, messages.Tier(*tier), *id); err != nil {
		return fmt.Errorf("-team, -tier or -id: %w", err)
	}
	body, err := callBody(messages.Endpoint(*endpoint), *prompt, *bodyPath, *maxTokens)
	if err != nil {
		return err
	}
	nc, err := nf.connect("sluice call")
	if err != nil {
		return err
	}
	defer nc.Close()
	c, err := client.New(nc, client.WithDomain(nf.domain))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	call := &messages.CallRequest{
		ID: *id, Model: *model, Endpoint: messages.Endpoint(*endpoint), Body: body,
		TimeoutMS: timeout.Milliseconds(),
	}
	res, err := c.Call(ctx, *team, messages.Tier(*tier), call)
	if err != nil {
		return err
	}
	out, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, string(out))
	if res.Error != nil {
		return exitCode(1)
	}
	return nil
}

// callBody builds the provider request body from --prompt or --body;
// a prompt becomes the body endpoint reads it in.
func callBody(endpoint messages.Endpoint, prompt, path string, maxTokens int) (json.RawMessage, error) {
	switch {
	case prompt != "" && path != "":
		return nil, errors.New("use -prompt or -body, not both")
	case path == "-":
		return io.ReadAll(os.Stdin)
	case path != "":
		return os.ReadFile(path)
	case prompt == "":
		return nil, errors.New("-prompt or -body is required")
	}
	b := map[string]any{}
	switch endpoint {
	case messages.EndpointEmbeddings:
		b["input"] = prompt
	case messages.EndpointCompletions:
		b["prompt"] = prompt
	case messages.EndpointResponses:
		b["input"] = prompt
	default:
		b["messages"] = []map[string]string{{"role": "user", "content": prompt}}
	}
	switch {
	case maxTokens > 0 && endpoint == messages.EndpointResponses:
		b["max_output_tokens"] = maxTokens
	case maxTokens > 0 && endpoint != messages.EndpointEmbeddings && endpoint != messages.EndpointCountTokens:
		b["max_tokens"] = maxTokens
	case endpoint == messages.EndpointMessages:
		// Anthropic refuses a Messages call without max_tokens.
		b["max_tokens"] = 1024
	}
	return json.Marshal(b)
}
