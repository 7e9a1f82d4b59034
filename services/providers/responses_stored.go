package providers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/sluicehq/sluice/messages"
)

// storedResponseRequest is the method and path (under the API root) of a
// GET or DELETE of a stored response, whose id the body names; ok is
// false for any other endpoint.
func storedResponseRequest(req Request) (method, path string, ok bool, err error) {
	switch req.Endpoint {
	case messages.EndpointResponseGet:
		method = http.MethodGet
	case messages.EndpointResponseDelete:
		method = http.MethodDelete
	default:
		return "", "", false, nil
	}
	var b struct {
		ResponseID string `json:"response_id"`
	}
	if err := json.Unmarshal(req.Body, &b); err != nil || b.ResponseID == "" {
		return "", "", true, fmt.Errorf("%w: no response_id", ErrInvalidBody)
	}
	return method, "/responses/" + url.PathEscape(b.ResponseID), true, nil
}

// doStored sends a GET or DELETE of a stored response to root (the API
// root: OpenAI's base_url, or Azure's {base_url}/openai/v1) with the
// dialect's headers, and reads the answer as OpenAI's, without usage.
func doStored(ctx context.Context, client *http.Client, req Request, root string, h http.Header) (*Response, bool, error) {
	method, path, ok, err := storedResponseRequest(req)
	if !ok || err != nil {
		return nil, ok, err
	}
	a, err := fetch(ctx, client, method, strings.TrimSuffix(root, "/")+path, h)
	if err != nil {
		return nil, true, err
	}
	resp := respond(a, parseOpenAIHeaders(a.header, answerTime(a.header, nil)), a.read(readOpenAIBody))
	// A stored response carries the usage of the call that made it,
	// settled then: fetching it uses no tokens.
	resp.Usage = nil
	return resp, true, nil
}
