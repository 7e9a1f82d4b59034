package providers

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// streamAll streams req through provider's adapter and returns the events.
func (f *fakeAPI) streamAll(provider string, req Request) ([]Event, *Response, error) {
	f.t.Helper()
	a, err := For(provider)
	if err != nil {
		f.t.Fatal(err)
	}
	s, ok := a.(Streamer)
	if !ok {
		f.t.Fatalf("%s cannot stream", provider)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var events []Event
	resp, err := s.Stream(ctx, http.DefaultClient, req, func(e Event) error {
		e.Raw = append([]byte(nil), e.Raw...)
		events = append(events, e)
		return nil
	})
	return events, resp, err
}

func TestOpenAIStreams(t *testing.T) {
	for _, tc := range []struct {
		name     string
		provider string
		body     string
		asked    bool
	}{
		{"openai asks for usage itself", ProviderOpenAI, `{"model":"m","stream":true,"max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`, false},
		{"openai client asked for usage", ProviderOpenAI, `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`, true},
		{"azure", ProviderAzure, `{"stream":true,"max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t, fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{"sk": {RPM: 600, TPM: 100000}}})
			base := f.url + "/v1"
			if tc.provider == ProviderAzure {
				base = f.url // Azure's URL names the deployment below the root
			}
			events, resp, err := f.streamAll(tc.provider, Request{Endpoint: messages.EndpointChatCompletions, Body: []byte(tc.body), Model: "m", BaseURL: base, Secret: "sk", APIVersion: "2024-10-21"})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != 200 || resp.Class != Success || resp.Usage == nil || resp.Usage.CompletionTokens != 4 {
				t.Fatalf("response %+v usage %+v", resp, resp.Usage)
			}
			var sent map[string]any
			if err := json.Unmarshal(f.last().body, &sent); err != nil {
				t.Fatal(err)
			}
			if opts, _ := sent["stream_options"].(map[string]any); opts["include_usage"] != true {
				t.Fatalf("sluice must ask the provider for usage: %s", f.last().body)
			}
			last := events[len(events)-1]
			if string(last.Data) != "[DONE]" || string(last.Raw) != "data: [DONE]" {
				t.Fatalf("last event %q", last.Raw)
			}
			injected := 0
			content := 0
			for _, e := range events {
				if e.Injected {
					injected++
				}
				if strings.Contains(string(e.Data), `"content"`) {
					content++
				}
				if !strings.HasPrefix(string(e.Raw), "data: ") {
					t.Errorf("event %q is not relayed as the provider framed it", e.Raw)
				}
			}
			if tc.asked && injected != 0 || !tc.asked && injected != 1 {
				t.Fatalf("%d events marked injected; the client asked for usage: %v", injected, tc.asked)
			}
			if content == 0 {
				t.Fatal("no content chunks")
			}
		})
	}
}

func TestStreamErrorAnswerIsReadWhole(t *testing.T) {
	f := newFakeAPI(t, fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{"sk": {RPM: 1, TPM: 100000}}, Quantum: time.Minute})
	req := Request{Endpoint: messages.EndpointChatCompletions, Body: []byte(`{"stream":true,"messages":[{"role":"user","content":"hi"}]}`), Model: "m", BaseURL: f.url + "/v1", Secret: "sk"}
	if _, _, err := f.streamAll(ProviderOpenAI, req); err != nil {
		t.Fatal(err)
	}
	events, resp, err := f.streamAll(ProviderOpenAI, req)
	if err != nil || len(events) != 0 || resp.Class != RateLimited || !strings.Contains(string(resp.Body), "rate_limit_exceeded") {
		t.Fatalf("a 429 to a streaming request: %v %d %+v", err, len(events), resp)
	}
}

func TestStreamStopsWhenTheRelayDoes(t *testing.T) {
	f := newFakeAPI(t, fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{"sk": {RPM: 600, TPM: 100000}}, ChunkDelay: 5 * time.Millisecond})
	stop := errors.New("client gone")
	a, _ := For(ProviderOpenAI)
	n := 0
	_, err := a.(Streamer).Stream(context.Background(), http.DefaultClient, Request{
		Endpoint: messages.EndpointChatCompletions, Body: []byte(`{"stream":true,"max_tokens":50,"messages":[{"role":"user","content":"hi"}]}`),
		Model: "m", BaseURL: f.url + "/v1", Secret: "sk",
	}, func(Event) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Fatalf("after the relay failed: %v, %d events", err, n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.fake.Stats().Total.StreamAborts != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the provider request should have been closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReadEventFraming(t *testing.T) {
	in := ": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: x\r\ndata: y\r\n\r\ndata: tail"
	r := bufio.NewReader(strings.NewReader(in))
	var got []string
	for {
		e, err := readEvent(r)
		if e != nil {
			got = append(got, e.Name+"|"+string(e.Data)+"|"+string(e.Raw))
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"message_start|{\"a\":1}|event: message_start\ndata: {\"a\":1}", "|x\ny|data: x\ndata: y", "|tail|data: tail"}
	if strings.Join(got, "\n---\n") != strings.Join(want, "\n---\n") {
		t.Fatalf("events:\n%q\nwant\n%q", got, want)
	}
	long := "data: " + strings.Repeat("x", MaxEventBytes+10) + "\n\n"
	if _, err := readEvent(bufio.NewReader(strings.NewReader(long))); !errors.Is(err, ErrEventTooLong) {
		t.Fatalf("an event over the bound: %v", err)
	}
}
