package test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/sluicehq/sluice/messages"
)

// A stored response made through one gateway is found through another,
// and after the gateway that relayed it is gone: the gateways share
// SLUICE_RESPONSES. A call continuing it, a GET and a DELETE through the
// second gateway go to the deployment that made it; once deleted, neither
// gateway knows it.
func TestStoredResponsesAcrossGateways(t *testing.T) {
	st := startSDKStack(t)
	other := startGateway(t, st.s, nil)
	a := openai.NewClient(option.WithBaseURL(st.url+"/v1"), option.WithAPIKey(devToken))
	b := openai.NewClient(option.WithBaseURL(other+"/v1"), option.WithAPIKey(devToken))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	var raw *http.Response
	first, err := a.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt-4o-mini",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Say ok: ")}}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	home := raw.Header.Get("x-sluice-deployment")
	if home == "" {
		t.Fatal("the response names no deployment")
	}
	// What the gateways share, in the wire contract's shape.
	js, _ := jetstream.New(connect(t, st.s))
	kv, err := js.KeyValue(ctx, messages.BucketResponses)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, messages.StoredResponseKey("demo", first.ID)); err != nil {
		t.Fatalf("response %s is not in %s: %v", first.ID, messages.BucketResponses, err)
	} else if string(e.Value()) != `{"pool":"gpt-4o-mini","deployment":"`+home+`"}` {
		t.Errorf("%s holds %s", messages.BucketResponses, e.Value())
	}

	next, err := b.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt-4o-mini", PreviousResponseID: openai.String(first.ID),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("and again")}}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatalf("continue %s through the other gateway: %v", first.ID, err)
	}
	if got := raw.Header.Get("x-sluice-deployment"); got != home || next.PreviousResponseID != first.ID {
		t.Errorf("the continuation went to %s (want %s), previous_response_id %q", got, home, next.PreviousResponseID)
	}
	got, err := b.Responses.Get(ctx, first.ID, responses.ResponseGetParams{}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatalf("get %s through the other gateway: %v", first.ID, err)
	}
	if got.ID != first.ID || raw.Header.Get("x-sluice-deployment") != home {
		t.Errorf("got %s from %s, want %s from %s", got.ID, raw.Header.Get("x-sluice-deployment"), first.ID, home)
	}
	if err := b.Responses.Delete(ctx, first.ID); err != nil {
		t.Fatalf("delete %s through the other gateway: %v", first.ID, err)
	}
	for name, c := range map[string]openai.Client{"the first gateway": a, "the second": b} {
		_, err := c.Responses.Get(ctx, first.ID, responses.ResponseGetParams{})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
			t.Errorf("%s, after the delete: %v, want 404", name, err)
		}
	}
}
