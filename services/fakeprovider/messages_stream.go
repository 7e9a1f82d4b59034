package fakeprovider

import (
	"encoding/json"
	"net/http"
)

// streamMessages answers an admitted Messages call with "stream": true as
// server-sent events in Anthropic's framing, each "event: <type>\ndata:
// <json>\n\n" with the data's type repeating the event's name:
//
//	message_start        the message with empty content, stop_reason null
//	                     and usage {input_tokens: the prompt, output_tokens: 1}
//	content_block_start  index 0, an empty text block
//	ping
//	content_block_delta  one text_delta per token: "ok", then " ok"
//	content_block_stop
//	message_delta        stop_reason (end_turn, or max_tokens when cut short)
//	                     and usage {output_tokens}, the cumulative count
//	message_stop
//
// Every event is flushed as written, and ChunkDelay is waited before each
// content_block_delta after the first: the pace of generation. The
// answer carries the same headers as a Messages reply that is not streamed.
//
// As for OpenAI streams, the call is settled and counted served once the
// last delta is out, before the closing events; a client that goes away
// before that ends the call as stream_aborted, settled against the tokens
// sent.
func (c *call) streamMessages(req messagesCall, prompt, out int64, stop string) {
	sse := c.openStream()
	var sent int64
	event := func(wait bool, v anthropicStreamEvent) bool {
		b, _ := json.Marshal(v) // the fake's own types: cannot fail
		return sse.send(wait, v.eventType(), b)
	}
	start := anthropicMessageStart{Type: "message_start", Message: anthropicStreamMessage{
		ID:      c.s.newID("msg_"),
		Type:    "message",
		Role:    "assistant",
		Model:   req.model,
		Content: []anthropicBlock{},
		Usage:   anthropicUsage{InputTokens: prompt, OutputTokens: 1},
	}}
	for _, e := range []anthropicStreamEvent{
		start,
		anthropicBlockStart{Type: "content_block_start", Index: 0, ContentBlock: anthropicBlock{Type: "text", Text: ""}},
		anthropicPing{Type: "ping"},
	} {
		if !event(false, e) {
			c.abort(prompt, sent)
			return
		}
	}
	for t := range out {
		if !event(t > 0, anthropicBlockDelta{Type: "content_block_delta", Index: 0,
			Delta: anthropicTextDelta{Type: "text_delta", Text: completionToken(t)}}) {
			c.abort(prompt, sent)
			return
		}
		sent++
	}

	// Everything was generated: settle and count the call before the
	// closing events, so that a client that has read message_stop finds
	// both.
	u := usage{PromptTokens: prompt, CompletionTokens: sent, TotalTokens: prompt + sent}
	c.s.limits.settle(c.adm.ticket, u.TotalTokens)
	c.end(outServed, http.StatusOK, u)

	for _, e := range []anthropicStreamEvent{
		anthropicBlockStop{Type: "content_block_stop", Index: 0},
		anthropicMessageDelta{Type: "message_delta", Delta: anthropicStop{StopReason: stop},
			Usage: anthropicOutputUsage{OutputTokens: sent}},
		anthropicMessageStop{Type: "message_stop"},
	} {
		if !event(false, e) {
			return
		}
	}
}

// ---- stream events ----

// anthropicStreamEvent is the data of one event; its type is the event's
// name.
type anthropicStreamEvent interface{ eventType() string }

type anthropicMessageStart struct {
	Type    string                 `json:"type"`
	Message anthropicStreamMessage `json:"message"`
}

// anthropicStreamMessage is the message as message_start announces it:
// no content yet, and a null stop_reason.
type anthropicStreamMessage struct {
	ID           string           `json:"id"`
	Type         string           `json:"type"`
	Role         string           `json:"role"`
	Model        string           `json:"model"`
	Content      []anthropicBlock `json:"content"`
	StopReason   *string          `json:"stop_reason"`
	StopSequence *string          `json:"stop_sequence"`
	Usage        anthropicUsage   `json:"usage"`
}

type anthropicBlockStart struct {
	Type         string         `json:"type"`
	Index        int            `json:"index"`
	ContentBlock anthropicBlock `json:"content_block"`
}

type anthropicPing struct {
	Type string `json:"type"`
}

type anthropicBlockDelta struct {
	Type  string             `json:"type"`
	Index int                `json:"index"`
	Delta anthropicTextDelta `json:"delta"`
}

type anthropicTextDelta struct {
	Type string `json:"type"` // "text_delta"
	Text string `json:"text"`
}

type anthropicBlockStop struct {
	Type  string `json:"type"`
	Index int    `json:"index"`
}

type anthropicMessageDelta struct {
	Type  string               `json:"type"`
	Delta anthropicStop        `json:"delta"`
	Usage anthropicOutputUsage `json:"usage"`
}

type anthropicStop struct {
	StopReason   string  `json:"stop_reason"`
	StopSequence *string `json:"stop_sequence"`
}

// anthropicOutputUsage is message_delta's usage: the output tokens so far.
type anthropicOutputUsage struct {
	OutputTokens int64 `json:"output_tokens"`
}

type anthropicMessageStop struct {
	Type string `json:"type"`
}

func (e anthropicMessageStart) eventType() string { return e.Type }
func (e anthropicBlockStart) eventType() string   { return e.Type }
func (e anthropicPing) eventType() string         { return e.Type }
func (e anthropicBlockDelta) eventType() string   { return e.Type }
func (e anthropicBlockStop) eventType() string    { return e.Type }
func (e anthropicMessageDelta) eventType() string { return e.Type }
func (e anthropicMessageStop) eventType() string  { return e.Type }
