package fakeprovider

import (
	"strings"
	"testing"
)

func TestChatPromptTokens(t *testing.T) {
	tests := []struct {
		name     string
		messages string
		want     int64
	}{
		{"one short message", `[{"role":"user","content":"hello world!"}]`, 3 + 3 + 3},
		{"rounds up", `[{"role":"user","content":"hello"}]`, 3 + 3 + 2},
		{"empty content", `[{"role":"user","content":""}]`, 3 + 3},
		{"null content", `[{"role":"assistant","content":null,"tool_calls":[]}]`, 3 + 3},
		{"no content", `[{"role":"assistant"}]`, 3 + 3},
		{"name adds one", `[{"role":"user","name":"bob","content":"abcd"}]`, 3 + 3 + 1 + 1},
		{"empty name adds nothing", `[{"role":"user","name":"","content":"abcd"}]`, 3 + 3 + 1},
		{"length in bytes", `[{"role":"user","content":"héllo"}]`, 3 + 3 + 2}, // 6 bytes
		{"two messages", `[{"role":"system","content":"12345678"},{"role":"user","content":"123456789"}]`, 3 + 3 + 2 + 3 + 3},
		{
			"text parts counted one by one, others ignored",
			`[{"role":"user","content":[{"type":"text","text":"abcde"},{"type":"image_url","image_url":{"url":"http://x/very/long/url"}},{"type":"text","text":"abc"}]}]`,
			3 + 3 + 2 + 1,
		},
		{"long text", `[{"role":"user","content":"` + strings.Repeat("x", 4001) + `"}]`, 3 + 3 + 1001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseChat([]byte(`{"model":"m","messages":`+tt.messages+`}`), "")
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got := chatPromptTokens(c.messages); got != tt.want {
				t.Errorf("tokens = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestEmbeddingTokens(t *testing.T) {
	tests := []struct {
		name   string
		input  string
		inputs int
		want   int64
	}{
		{"string", `"hello world!"`, 1, 3},
		{"string rounds up", `"hello"`, 1, 2},
		{"strings", `["abcd","abcde","a"]`, 3, 1 + 2 + 1},
		{"token ids", `[1,2,3,4,5]`, 1, 5},
		{"lists of token ids", `[[1,2],[3],[4,5,6]]`, 3, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseEmbedding([]byte(`{"model":"e","input":`+tt.input+`}`), "")
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if len(c.inputs) != tt.inputs {
				t.Errorf("%d inputs, want %d", len(c.inputs), tt.inputs)
			}
			if got := embeddingTokens(c.inputs); got != tt.want {
				t.Errorf("tokens = %d, want %d", got, tt.want)
			}
		})
	}
}
