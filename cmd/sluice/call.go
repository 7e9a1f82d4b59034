package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
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
	prompt := fs.String("prompt", "", "user message for a chat completion")
	bodyPath := fs.String("body", "", "file holding the full request body (JSON); - for stdin")
	endpoint := fs.String("endpoint", string(messages.EndpointChatCompletions), "provider endpoint: "+string(messages.EndpointChatCompletions)+" or "+string(messages.EndpointEmbeddings))
	maxTokens := fs.Int("max-tokens", 0, "max_tokens for a --prompt call (0: the pool's default)")
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
	body, err := callBody(*prompt, *bodyPath, *maxTokens)
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

// callBody builds the provider request body from --prompt or --body.
func callBody(prompt, path string, maxTokens int) (json.RawMessage, error) {
	switch {
	case prompt != "" && path != "":
		return nil, errors.New("use -prompt or -body, not both")
	case path == "-":
		return io.ReadAll(os.Stdin)
	case path != "":
		return os.ReadFile(path)
	case prompt != "":
		b := map[string]any{"messages": []map[string]string{{"role": "user", "content": prompt}}}
		if maxTokens > 0 {
			b["max_tokens"] = maxTokens
		}
		return json.Marshal(b)
	default:
		return nil, errors.New("-prompt or -body is required")
	}
}
