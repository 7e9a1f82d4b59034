package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/client"
	"github.com/sluicehq/sluice/services/devstack"
)

// sluiceURL is the NATS URL of the sluice that TestMain starts for the
// examples and tests: `sluice dev` in this process.
var sluiceURL string

func TestMain(m *testing.M) {
	stack, err := devstack.Start(devstack.Options{NATSPort: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var services []*devstack.Service
	d, err := stack.StartDispatcher("example", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	services = append(services, d)
	for _, r := range stack.Shared.Load().Regions() {
		e, err := stack.StartExecutor(r, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		services = append(services, e)
	}
	sluiceURL = stack.ClientURL()
	code := m.Run()
	for _, s := range services {
		_ = s.Stop()
	}
	stack.Close()
	os.Exit(code)
}

// Call a model through sluice and read the provider's answer.
func ExampleClient_Call() {
	nc, err := nats.Connect(sluiceURL) // e.g. nats.DefaultURL with `sluice dev` running
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	c, err := client.New(nc)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	res, err := c.Call(ctx, "demo", messages.TierStandard, &messages.CallRequest{
		Model: "gpt-4o-mini",
		Body:  json.RawMessage(`{"messages":[{"role":"user","content":"Say hi"}],"max_tokens":20}`),
	})
	if err != nil {
		panic(err) // NATS unreachable, or ctx ended
	}
	if res.Err() != nil {
		fmt.Println("sluice answered an error:", res.Error.Code)
		return
	}
	var completion struct {
		Object  string `json:"object"`
		Choices []struct {
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(res.Body, &completion); err != nil {
		panic(err)
	}
	fmt.Println(res.Status, completion.Object, completion.Choices[0].FinishReason, res.Usage.TotalTokens > 0)
	// Output: ok chat.completion stop true
}

// A client that was away when its result was published still gets it:
// Await looks in the results stream.
func TestAwaitFindsAResultPublishedEarlier(t *testing.T) {
	nc, err := nats.Connect(sluiceURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	call := &messages.CallRequest{Model: "gpt-4o-mini", Body: json.RawMessage(`{"messages":[{"role":"user","content":"x"}]}`)}
	first, err := c.Call(ctx, "demo", messages.TierHigh, call)
	if err != nil || first.Status != messages.StatusOK {
		t.Fatalf("call: %v %+v", err, first)
	}
	// Much later, on a new connection, with no subscription at the time.
	nc2, err := nats.Connect(sluiceURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	c2, _ := client.New(nc2)
	again, err := c2.Await(ctx, "demo", call.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID || again.Deployment != first.Deployment || again.Usage.TotalTokens != first.Usage.TotalTokens {
		t.Fatalf("Await returned %+v, want the stored %+v", again, first)
	}
	// Submitting the same call again does not run it again.
	if _, err := c2.Submit(ctx, "demo", messages.TierHigh, call); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelShort()
	sub, _ := nc2.SubscribeSync(messages.ResultSubject("demo", call.ID))
	if m, err := sub.NextMsgWithContext(short); err == nil {
		t.Fatalf("a duplicate submit was answered again: %s", m.Data)
	}
}

// Await ends with the context when no result comes.
func TestAwaitEndsWithItsContext(t *testing.T) {
	nc, err := nats.Connect(sluiceURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c, _ := client.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Await(ctx, "demo", "never-submitted"); err == nil {
		t.Fatal("Await of a call that was never made must fail when ctx ends")
	}
}
