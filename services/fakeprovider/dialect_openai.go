package fakeprovider

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// This file is the OpenAI wire format: request bodies as the fake reads
// them, response and error bodies, and the rate-limit headers. The shapes
// follow api.openai.com, which most OpenAI-compatible servers copy.

// maxInputs is OpenAI's limit on the number of embedding inputs per call.
const maxInputs = 2048

// Error types and codes used in OpenAI error bodies.
const (
	typeInvalidRequest    = "invalid_request_error"
	typeServer            = "server_error"
	typeInsufficientQuota = "insufficient_quota"
	codeRateLimit         = "rate_limit_exceeded"
	codeInsufficientQuota = "insufficient_quota"
	codeInvalidAPIKey     = "invalid_api_key"
	codeMissingParam      = "missing_required_parameter"
	codeInvalidValue      = "invalid_value"
	codeInvalidType       = "invalid_type"
	codeModelNotFound     = "model_not_found"
	codeUnknownURL        = "unknown_url"
)

// apiError is an error answered with OpenAI's error body:
// {"error":{"message":...,"type":...,"param":...,"code":...}}.
type apiError struct {
	status  int
	message string
	typ     string
	param   string // "" is sent as null
	code    string // "" is sent as null
	// gateway marks an error of Azure's gateway rather than of the model
	// service: the Azure dialect renders it in its own shape.
	gateway bool
}

func (e *apiError) Error() string { return e.message }

func invalidRequest(param, code, format string, args ...any) *apiError {
	return &apiError{
		status:  http.StatusBadRequest,
		message: fmt.Sprintf(format, args...),
		typ:     typeInvalidRequest,
		param:   param,
		code:    code,
	}
}

var (
	errInvalidKey = &apiError{
		status:  http.StatusUnauthorized,
		message: "Incorrect API key provided",
		typ:     typeInvalidRequest,
		code:    codeInvalidAPIKey,
	}
	errInsufficientQuota = &apiError{
		status: http.StatusTooManyRequests,
		message: "You exceeded your current quota, please check your plan and billing details. " +
			"For more information on this error, read the docs: " +
			"https://platform.openai.com/docs/guides/error-codes/api-errors.",
		typ:  typeInsufficientQuota,
		code: codeInsufficientQuota,
	}
	errBadJSON = invalidRequest("", "",
		"We could not parse the JSON body of your request. (HINT: This likely means you aren't "+
			"using your HTTP library correctly. The OpenAI API expects a JSON payload, but what "+
			"was sent was not valid JSON.)")
)

// modelNotFound is OpenAI's 404 for a model outside Config.Models.
func modelNotFound(m string) *apiError {
	return &apiError{
		status:  http.StatusNotFound,
		message: fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", m),
		typ:     typeInvalidRequest,
		param:   "model",
		code:    codeModelNotFound,
	}
}

func serverError(status int) *apiError {
	return &apiError{
		status:  status,
		message: "The server had an error while processing your request. Sorry about that!",
		typ:     typeServer,
	}
}

// rateLimitError is OpenAI's 429 for a bucket or window that cannot cover
// the call, or for a call too large for a window's whole token limit,
// which OpenAI tells apart by its message.
func rateLimitError(model string, a admission, requested int64) *apiError {
	if a.tooLarge {
		return &apiError{
			status: http.StatusTooManyRequests,
			message: fmt.Sprintf("Request too large for %s in organization org-fake on tokens per min (TPM): "+
				"Limit %d, Requested %d. The input or output tokens must be reduced in order to run successfully. "+
				"Visit https://platform.openai.com/account/rate-limits to learn more.",
				model, a.wholeLimit, requested),
			typ:  "tokens",
			code: codeRateLimit,
		}
	}
	unit, abbr := "requests", "RPM"
	if a.limitedBy == "tokens" {
		unit, abbr = "tokens", "TPM"
	}
	var limit, used int64
	if a.refused != nil {
		limit = a.refused.limit
		used = max(0, limit-a.refused.remaining)
	}
	return &apiError{
		status: http.StatusTooManyRequests,
		message: fmt.Sprintf("Rate limit reached for %s in organization org-fake on %s per min (%s): "+
			"Limit %d, Used %d, Requested %d. Please try again in %s. "+
			"Visit https://platform.openai.com/account/rate-limits to learn more.",
			model, unit, abbr, limit, used, requested, formatDuration(a.retryAfter)),
		typ:  a.limitedBy,
		code: codeRateLimit,
	}
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) body() errorBody {
	return errorBody{Error: errorDetail{
		Message: e.message,
		Type:    e.typ,
		Param:   nullable(e.param),
		Code:    nullable(e.code),
	}}
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// ---- requests ----

type chatRequest struct {
	Model               string            `json:"model"`
	Messages            []json.RawMessage `json:"messages"`
	MaxTokens           *int64            `json:"max_tokens"`
	MaxCompletionTokens *int64            `json:"max_completion_tokens"`
	N                   *int64            `json:"n"`
	Stream              bool              `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

type chatMessage struct {
	Role    *string         `json:"role"`
	Name    *string         `json:"name"`
	Content json.RawMessage `json:"content"`
}

type contentPart struct {
	Type string  `json:"type"`
	Text *string `json:"text"`
}

// chatCall is a validated chat completion request.
type chatCall struct {
	model        string
	messages     []promptMessage
	maxTokens    int64 // per choice; meaningful when hasMaxTokens
	hasMaxTokens bool
	n            int64
	stream       bool
	includeUsage bool
}

// parseChat validates a chat request. urlModel, when not empty, is the
// model named by the URL (Azure's deployment): it stands for the body's,
// which is then optional and ignored, as Azure ignores it.
func parseChat(body []byte, urlModel string) (chatCall, *apiError) {
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return chatCall{}, decodeError(err)
	}
	if urlModel != "" {
		req.Model = urlModel
	}
	c := chatCall{model: req.Model, n: 1, stream: req.Stream}
	if req.Model == "" {
		return c, invalidRequest("model", codeMissingParam, "Missing required parameter: 'model'.")
	}
	if req.Messages == nil {
		return c, invalidRequest("messages", codeMissingParam, "Missing required parameter: 'messages'.")
	}
	if len(req.Messages) == 0 {
		return c, invalidRequest("messages", codeInvalidValue, "[] is too short - 'messages'")
	}
	for i, raw := range req.Messages {
		m, err := parseMessage(i, raw)
		if err != nil {
			return c, err
		}
		c.messages = append(c.messages, m)
	}
	// max_completion_tokens supersedes the deprecated max_tokens.
	for _, p := range []struct {
		name string
		v    *int64
	}{{"max_tokens", req.MaxTokens}, {"max_completion_tokens", req.MaxCompletionTokens}} {
		if p.v == nil {
			continue
		}
		if *p.v < 0 {
			return c, invalidRequest(p.name, codeInvalidValue, "%d is less than the minimum of 0 - '%s'", *p.v, p.name)
		}
		if *p.v > maxTokenParam {
			return c, invalidRequest(p.name, codeInvalidValue, "%s is too large: %d. This model supports at most %d completion tokens.", p.name, *p.v, maxTokenParam)
		}
		c.maxTokens, c.hasMaxTokens = *p.v, true
	}
	if req.N != nil {
		if *req.N < 1 || *req.N > maxChoices {
			return c, invalidRequest("n", codeInvalidValue, "%d is not in 1..%d - 'n'", *req.N, maxChoices)
		}
		c.n = *req.N
	}
	c.includeUsage = req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	return c, nil
}

func parseMessage(i int, raw json.RawMessage) (promptMessage, *apiError) {
	var m chatMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return promptMessage{}, invalidRequest(fmt.Sprintf("messages[%d]", i), codeInvalidType,
			"Invalid type for 'messages[%d]': expected an object.", i)
	}
	if m.Role == nil || *m.Role == "" {
		p := fmt.Sprintf("messages[%d].role", i)
		return promptMessage{}, invalidRequest(p, codeMissingParam, "Missing required parameter: '%s'.", p)
	}
	pm := promptMessage{named: m.Name != nil && *m.Name != ""}
	content := bytes.TrimSpace(m.Content)
	switch {
	case len(content) == 0 || string(content) == "null":
		// No content: an assistant message carrying only tool calls.
	case content[0] == '"':
		var s string
		if err := json.Unmarshal(content, &s); err != nil {
			return pm, badContent(i)
		}
		pm.texts = []string{s}
	case content[0] == '[':
		var parts []contentPart
		if err := json.Unmarshal(content, &parts); err != nil {
			return pm, badContent(i)
		}
		for _, p := range parts {
			if p.Type == "text" && p.Text != nil {
				pm.texts = append(pm.texts, *p.Text)
			}
		}
	default:
		return pm, badContent(i)
	}
	return pm, nil
}

func badContent(i int) *apiError {
	p := fmt.Sprintf("messages[%d].content", i)
	return invalidRequest(p, codeInvalidType, "Invalid type for '%s': expected a string or an array of content parts.", p)
}

// decodeError turns a JSON decoding error into OpenAI's 400: a syntax
// error is a body that is not JSON, a type error names the field.
func decodeError(err error) *apiError {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return invalidRequest(te.Field, codeInvalidType, "Invalid type for '%s': expected %s, but got %s.", te.Field, te.Type, te.Value)
	}
	return errBadJSON
}

type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	Dimensions     *int            `json:"dimensions"`
	EncodingFormat string          `json:"encoding_format"`
}

// embeddingCall is a validated embeddings request.
type embeddingCall struct {
	model      string
	inputs     []embeddingInput
	dimensions int // 0: the configured default
	base64     bool
}

// parseEmbedding validates an embeddings request; urlModel is as for
// parseChat.
func parseEmbedding(body []byte, urlModel string) (embeddingCall, *apiError) {
	var req embeddingRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return embeddingCall{}, decodeError(err)
	}
	if urlModel != "" {
		req.Model = urlModel
	}
	c := embeddingCall{model: req.Model}
	if req.Model == "" {
		return c, invalidRequest("model", codeMissingParam, "Missing required parameter: 'model'.")
	}
	inputs, err := parseInput(req.Input)
	if err != nil {
		return c, err
	}
	c.inputs = inputs
	if req.Dimensions != nil {
		if *req.Dimensions < 1 || *req.Dimensions > maxDimensions {
			return c, invalidRequest("dimensions", codeInvalidValue, "%d is not in 1..%d - 'dimensions'", *req.Dimensions, maxDimensions)
		}
		c.dimensions = *req.Dimensions
	}
	switch req.EncodingFormat {
	case "", "float":
	case "base64":
		c.base64 = true
	default:
		return c, invalidRequest("encoding_format", codeInvalidValue, "'%s' is not one of ['float', 'base64'] - 'encoding_format'", req.EncodingFormat)
	}
	return c, nil
}

// parseInput accepts OpenAI's four shapes of input: a string, an array of
// strings, an array of token ids, and an array of arrays of token ids.
func parseInput(raw json.RawMessage) ([]embeddingInput, *apiError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, invalidRequest("input", codeMissingParam, "Missing required parameter: 'input'.")
	}
	invalid := invalidRequest("input", codeInvalidValue,
		"'input' must be a string, an array of strings, an array of token ids or an array of arrays of token ids, none of them empty.")
	var inputs []embeddingInput
	var (
		one     string
		strs    []string
		ids     []int64
		idLists [][]int64
	)
	switch {
	case json.Unmarshal(raw, &one) == nil:
		inputs = []embeddingInput{{text: one, isText: true}}
	case json.Unmarshal(raw, &strs) == nil:
		for _, s := range strs {
			inputs = append(inputs, embeddingInput{text: s, isText: true})
		}
	case json.Unmarshal(raw, &ids) == nil:
		if len(ids) == 0 {
			return nil, invalid
		}
		inputs = []embeddingInput{{ids: ids}}
	case json.Unmarshal(raw, &idLists) == nil:
		for _, l := range idLists {
			inputs = append(inputs, embeddingInput{ids: l})
		}
	default:
		return nil, invalid
	}
	if len(inputs) == 0 || len(inputs) > maxInputs {
		return nil, invalid
	}
	for _, in := range inputs {
		if in.isText && in.text == "" || !in.isText && len(in.ids) == 0 {
			return nil, invalid
		}
		for _, id := range in.ids {
			if id < 0 {
				return nil, invalid
			}
		}
	}
	return inputs, nil
}

// ---- responses ----

type usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"` // "chat.completion"
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   usage        `json:"usage"`
}

type chatChoice struct {
	Index        int64            `json:"index"`
	Message      assistantMessage `json:"message"`
	Logprobs     *struct{}        `json:"logprobs"`
	FinishReason string           `json:"finish_reason"`
}

type assistantMessage struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

type chatChunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"` // "chat.completion.chunk"
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []chunkChoice `json:"choices"` // [] in the final usage chunk, never null
	// Usage is null on every chunk but the last when the client asked for
	// usage, and absent when it did not, as OpenAI sends it.
	Usage json.RawMessage `json:"usage,omitempty"`
}

type chunkChoice struct {
	Index        int64     `json:"index"`
	Delta        delta     `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type delta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type embeddingList struct {
	Object string           `json:"object"` // "list"
	Data   []embeddingDatum `json:"data"`
	Model  string           `json:"model"`
	Usage  embeddingUsage   `json:"usage"`
}

type embeddingDatum struct {
	Object    string `json:"object"` // "embedding"
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string
}

type embeddingUsage struct {
	PromptTokens int64 `json:"prompt_tokens"`
	TotalTokens  int64 `json:"total_tokens"`
}

type modelList struct {
	Object string  `json:"object"` // "list"
	Data   []model `json:"data"`
}

type model struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // "model"
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// ---- headers ----

// setRateHeaders writes OpenAI's x-ratelimit-* headers for the dimensions
// the key is limited in.
func setRateHeaders(h http.Header, v rateView) {
	for _, d := range []struct {
		name string
		b    *bucketView
	}{{"requests", v.requests}, {"tokens", v.tokens}} {
		if d.b == nil {
			continue
		}
		h.Set("x-ratelimit-limit-"+d.name, strconv.FormatInt(d.b.limit, 10))
		h.Set("x-ratelimit-remaining-"+d.name, strconv.FormatInt(d.b.remaining, 10))
		h.Set("x-ratelimit-reset-"+d.name, formatDuration(d.b.reset))
	}
}

// setRetryHeaders writes retry-after in whole seconds, rounded up and at
// least 1 as HTTP wants a positive integer, and retry-after-ms, which
// Azure and the OpenAI SDKs prefer for its precision.
func setRetryHeaders(h http.Header, d time.Duration) {
	ms := max(1, ceilDiv(int64(d), int64(time.Millisecond)))
	h.Set("retry-after", strconv.FormatInt(max(1, ceilDiv(int64(d), int64(time.Second))), 10))
	h.Set("retry-after-ms", strconv.FormatInt(ms, 10))
}

// formatDuration formats a wait as OpenAI's reset headers do: Go's
// duration syntax at millisecond precision ("12ms", "1s", "6m0s",
// "1m30.5s"). It rounds up, so that a client waiting exactly that long
// finds the capacity there.
func formatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return (time.Duration(ceilDiv(int64(d), int64(time.Millisecond))) * time.Millisecond).String()
}

// writeJSON writes v as the response body with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // only the fake's own types are encoded: a bug
		status = http.StatusInternalServerError
		body = []byte(`{"error":{"message":"fakeprovider: encoding the response failed","type":"server_error","param":null,"code":null}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// bearer extracts the key from "Authorization: Bearer <key>".
func bearer(r *http.Request) string {
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(key)
}
