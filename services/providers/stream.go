package providers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/sluicehq/sluice/messages"
)

// MaxEventBytes bounds one server-sent event: a provider that sends a
// longer one is cut off.
const MaxEventBytes = 4 << 20

// ErrEventTooLong is returned by Stream when an event exceeds
// MaxEventBytes.
var ErrEventTooLong = errors.New("providers: server-sent event too long")

// ErrStreamIncomplete is returned by Stream when the provider closed a
// stream without its last event (OpenAI's [DONE], Anthropic's
// message_stop): the answer, and its usage, may be cut short.
var ErrStreamIncomplete = errors.New("providers: the stream ended without its last event")

// Event is one server-sent event of a streamed answer, as the provider
// sent it.
type Event struct {
	// Raw is the event's lines, without the blank line that ends it: what
	// a relay writes, followed by a blank line.
	Raw []byte
	// Name is the event's "event:" field, empty when it has none; Data its
	// "data:" lines joined.
	Name string
	Data []byte
	// Injected marks an event the client did not ask for: the usage-only
	// chunk sluice asked the provider for, to settle tokens. Relays drop it.
	Injected bool
}

// Streamer is an Adapter that can relay a streamed answer.
type Streamer interface {
	Adapter
	// Stream sends req, whose body asks for a stream, and calls onEvent
	// with each event of a 2xx event-stream answer, in order, as it
	// arrives. It returns the Response once the stream ends: Status,
	// Header, Limits, Class, and the Usage the stream reported; Body only
	// for an answer that is not a stream (an error), read whole. It returns
	// an error when no HTTP answer arrived (as Do), when onEvent does
	// (reading stops and the request is closed), when reading broke off, or
	// when an event exceeds MaxEventBytes (ErrEventTooLong); ctx's error
	// when ctx ended.
	Stream(ctx context.Context, client *http.Client, req Request, onEvent func(Event) error) (*Response, error)
}

// sseDialect is what a dialect contributes to reading a stream.
type sseDialect struct {
	// limits reads the rate-limit headers.
	limits func(h http.Header) RateLimits
	// readBody reads a non-stream answer (an error).
	readBody func([]byte) verdict
	// observe reads one event: usage it reports (added to what earlier
	// events reported), and whether the event is one the client did not
	// ask for.
	observe func(e *Event, u *streamUsage)
	// last reports whether e is the event that ends a complete stream.
	last func(e Event) bool
}

// streamUsage accumulates what a stream's events report.
type streamUsage struct {
	prompt, completion, total int64
	// cached is the prompt tokens read from the provider's cache.
	cached int64
	seen   bool
}

func (u streamUsage) usage() *messages.Usage {
	if !u.seen {
		return nil
	}
	return usage(u.prompt, u.completion, u.total, u.cached)
}

// set takes the counts of a usage the stream reported.
func (u *streamUsage) set(got *messages.Usage) {
	u.prompt, u.completion, u.total, u.cached, u.seen = got.PromptTokens, got.CompletionTokens, got.TotalTokens, got.CachedTokens(), true
}

// stream posts body and reads the answer as a stream when it is one.
func stream(ctx context.Context, client *http.Client, url string, header http.Header, body []byte, d sseDialect, onEvent func(Event) error) (*Response, error) {
	resp, err := send(ctx, client, url, header, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode < 200 || resp.StatusCode > 299 || mediaType != "text/event-stream" {
		a, err := readAnswer(resp)
		if err != nil {
			return nil, err
		}
		return respond(a, d.limits(a.header), a.read(d.readBody)), nil
	}
	var u streamUsage
	complete := false
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		e, err := readEvent(r)
		if errors.Is(err, io.EOF) && e == nil {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if e != nil {
			d.observe(e, &u)
			complete = complete || d.last(*e)
			if err := onEvent(*e); err != nil {
				return nil, err
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	if !complete {
		return nil, ErrStreamIncomplete
	}
	out := &Response{Status: resp.StatusCode, Header: resp.Header, Class: Success, Usage: u.usage(), Limits: d.limits(resp.Header)}
	return out, nil
}

// readEvent reads one event: the lines up to a blank line. Comment lines
// (":" keep-alives) are dropped; an event of nothing but comments is
// skipped. At the end of the stream it returns io.EOF, with the last event
// if the stream ended without its blank line.
func readEvent(r *bufio.Reader) (*Event, error) {
	var raw bytes.Buffer
	e := &Event{}
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long line: gather it piece by piece, within the bound.
			full := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				if len(full) > MaxEventBytes {
					return nil, ErrEventTooLong
				}
				line, err = r.ReadSlice('\n')
				full = append(full, line...)
			}
			line = full
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		switch {
		case len(trimmed) == 0 && len(line) > 0:
			if raw.Len() > 0 {
				e.Raw = raw.Bytes()
				return e, nil
			}
		case len(trimmed) > 0 && trimmed[0] == ':':
			// A comment: nothing to relay.
		case len(trimmed) > 0:
			if raw.Len()+len(trimmed) > MaxEventBytes {
				return nil, ErrEventTooLong
			}
			if raw.Len() > 0 {
				raw.WriteByte('\n')
			}
			raw.Write(trimmed)
			field, value, _ := bytes.Cut(trimmed, []byte(":"))
			value = bytes.TrimPrefix(value, []byte(" "))
			switch string(field) {
			case "event":
				e.Name = string(value)
			case "data":
				if len(e.Data) > 0 {
					e.Data = append(e.Data, '\n')
				}
				e.Data = append(e.Data, value...)
			}
		}
		if errors.Is(err, io.EOF) {
			if raw.Len() > 0 {
				e.Raw = raw.Bytes()
				return e, io.EOF
			}
			return nil, io.EOF
		}
	}
}

// openAIStream reads OpenAI-shaped streams (OpenAI, Azure, compatible
// APIs), of chat completions and of legacy completions alike: the last
// chunk, asked for with stream_options.include_usage, carries the usage
// and no choices.
func openAIStream(limits func(http.Header) RateLimits, clientAsked bool) sseDialect {
	return sseDialect{
		limits:   limits,
		readBody: readOpenAIBody,
		observe: func(e *Event, u *streamUsage) {
			if len(e.Data) == 0 || e.Data[0] != '{' {
				return // [DONE]
			}
			var chunk struct {
				Choices []json.RawMessage  `json:"choices"`
				Usage   *openAIUsageFields `json:"usage"`
			}
			if json.Unmarshal(e.Data, &chunk) != nil || chunk.Usage == nil {
				return
			}
			var cached int64
			if d := chunk.Usage.PromptTokensDetails; d != nil {
				cached = d.CachedTokens
			}
			u.prompt, u.completion, u.total, u.cached, u.seen = chunk.Usage.PromptTokens, chunk.Usage.CompletionTokens, chunk.Usage.TotalTokens, cached, true
			e.Injected = !clientAsked && len(chunk.Choices) == 0
		},
		last: func(e Event) bool { return string(e.Data) == "[DONE]" },
	}
}

// withStreamUsage asks an OpenAI-shaped streaming body for the usage
// chunk, and reports whether the client had asked for it itself.
func withStreamUsage(body []byte) ([]byte, bool, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrInvalidBody, err)
	}
	var opts map[string]json.RawMessage
	if raw, ok := fields["stream_options"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &opts); err != nil {
			return nil, false, fmt.Errorf("%w: stream_options: %v", ErrInvalidBody, err)
		}
	}
	var asked bool
	if raw, ok := opts["include_usage"]; ok && json.Unmarshal(raw, &asked) == nil && asked {
		return body, true, nil
	}
	if opts == nil {
		opts = map[string]json.RawMessage{}
	}
	opts["include_usage"] = json.RawMessage("true")
	encoded, err := json.Marshal(opts)
	if err != nil {
		return nil, false, err
	}
	fields["stream_options"] = encoded
	out, err := json.Marshal(fields)
	return out, false, err
}

// Stream implements Streamer.
func (OpenAI) Stream(ctx context.Context, client *http.Client, req Request, onEvent func(Event) error) (*Response, error) {
	if req.Endpoint == messages.EndpointResponses {
		body, err := withModel(req.Body, req.Model)
		if err != nil {
			return nil, err
		}
		url, h := openAIRequest(req)
		return streamResponses(ctx, client, url, h, body, onEvent)
	}
	if req.Endpoint != messages.EndpointChatCompletions && req.Endpoint != messages.EndpointCompletions {
		return nil, fmt.Errorf("%w: only chat completions, completions and responses stream", ErrUnsupportedEndpoint)
	}
	body, err := withModel(req.Body, req.Model)
	if err != nil {
		return nil, err
	}
	body, asked, err := withStreamUsage(body)
	if err != nil {
		return nil, err
	}
	url, h := openAIRequest(req)
	return stream(ctx, client, url, h, body, openAIStream(func(h http.Header) RateLimits { return parseOpenAIHeaders(h, answerTime(h, nil)) }, asked), onEvent)
}

// Stream implements Streamer.
func (Azure) Stream(ctx context.Context, client *http.Client, req Request, onEvent func(Event) error) (*Response, error) {
	if req.Endpoint == messages.EndpointResponses {
		u, body, err := azureRequest(req)
		if err != nil {
			return nil, err
		}
		h := jsonHeaders(req)
		h.Set("api-key", req.Secret)
		return streamResponses(ctx, client, u, h, body, onEvent)
	}
	if req.Endpoint != messages.EndpointChatCompletions && req.Endpoint != messages.EndpointCompletions {
		return nil, fmt.Errorf("%w: only chat completions, completions and responses stream", ErrUnsupportedEndpoint)
	}
	u, err := azureURL(req)
	if err != nil {
		return nil, err
	}
	body, asked, err := withStreamUsage(req.Body)
	if err != nil {
		return nil, err
	}
	h := jsonHeaders(req)
	h.Set("api-key", req.Secret)
	return stream(ctx, client, u, h, body, openAIStream(func(h http.Header) RateLimits { return parseOpenAIHeaders(h, answerTime(h, nil)) }, asked), onEvent)
}
