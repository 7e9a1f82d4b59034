package fakeprovider

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"net/http"
	"testing"
	"time"
)

func TestEmbeddings(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		count  int
		dims   int
		tokens int64
		base64 bool
	}{
		{"string", `{"model":"e","input":"hello world!"}`, 1, 8, 3, false},
		{"strings", `{"model":"e","input":["abcd","abcdefgh","x"]}`, 3, 8, 4, false},
		{"token ids", `{"model":"e","input":[101,2023,102]}`, 1, 8, 3, false},
		{"lists of token ids", `{"model":"e","input":[[1,2],[3,4,5]]}`, 2, 8, 5, false},
		{"dimensions", `{"model":"e","input":"x","dimensions":32}`, 1, 32, 1, false},
		{"base64", `{"model":"e","input":["ab","cd"],"encoding_format":"base64"}`, 2, 8, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Only the prompt is charged: 60 TPM over 1m is one token per
			// second, a capacity of 60.
			h := newHarness(t, Config{Quantum: time.Minute, Keys: map[string]KeyConfig{"sk-a": {TPM: 60}}})
			r := h.post("/v1/embeddings", "sk-a", tt.body)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			var resp struct {
				Object string `json:"object"`
				Model  string `json:"model"`
				Data   []struct {
					Object    string `json:"object"`
					Index     int    `json:"index"`
					Embedding any    `json:"embedding"`
				} `json:"data"`
				Usage map[string]int64 `json:"usage"`
			}
			r.decode(t, &resp)
			if resp.Object != "list" || resp.Model != "e" || len(resp.Data) != tt.count {
				t.Fatalf("response %s", r.body)
			}
			if resp.Usage["prompt_tokens"] != tt.tokens || resp.Usage["total_tokens"] != tt.tokens || len(resp.Usage) != 2 {
				t.Errorf("usage %v, want %d prompt and total", resp.Usage, tt.tokens)
			}
			if got := r.header.Get("x-ratelimit-remaining-tokens"); got != itoa(60-tt.tokens) {
				t.Errorf("remaining tokens %s, want %d", got, 60-tt.tokens)
			}
			for i, d := range resp.Data {
				if d.Object != "embedding" || d.Index != i {
					t.Errorf("datum %d: %+v", i, d)
				}
				vec := decodeVector(t, d.Embedding, tt.base64)
				if len(vec) != tt.dims {
					t.Errorf("datum %d has %d dimensions, want %d", i, len(vec), tt.dims)
				}
				var norm float64
				for _, x := range vec {
					norm += float64(x) * float64(x)
				}
				if math.Abs(norm-1) > 1e-4 {
					t.Errorf("datum %d has norm² %v, want 1", i, norm)
				}
			}
			if c := h.fake.Stats().Keys["sk-a"]; c.Served != 1 || c.PromptTokens != tt.tokens || c.CompletionTokens != 0 {
				t.Errorf("counters %+v", c)
			}
		})
	}
}

func decodeVector(t *testing.T, v any, isBase64 bool) []float32 {
	t.Helper()
	if isBase64 {
		s, ok := v.(string)
		if !ok {
			t.Fatalf("base64 embedding is %T", v)
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b)%4 != 0 {
			t.Fatalf("base64 embedding %q: %v", s, err)
		}
		vec := make([]float32, len(b)/4)
		for i := range vec {
			vec[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return vec
	}
	list, ok := v.([]any)
	if !ok {
		t.Fatalf("embedding is %T", v)
	}
	vec := make([]float32, len(list))
	for i, x := range list {
		vec[i] = float32(x.(float64))
	}
	return vec
}

func TestEmbedDeterministic(t *testing.T) {
	a := embed(embeddingInput{text: "hello", isText: true}, 8)
	b := embed(embeddingInput{text: "hello", isText: true}, 8)
	c := embed(embeddingInput{text: "world", isText: true}, 8)
	d := embed(embeddingInput{ids: []int64{1, 2}}, 8)
	e := embed(embeddingInput{ids: []int64{2, 1}}, 8)
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("equal inputs embed differently")
		}
	}
	if equal(a, c) || equal(d, e) {
		t.Error("different inputs embed equally")
	}
}

func equal(a, b []float32) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
