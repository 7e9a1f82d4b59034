package providers

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/sluicehq/sluice/messages"
)

// Azure speaks Azure OpenAI. The URL names the deployment (Request.Model)
// and the api-version (Request.APIVersion, default
// DefaultAzureAPIVersion):
//
//	{base_url}/openai/deployments/{model}/chat/completions?api-version=...
//	{base_url}/openai/deployments/{model}/completions?api-version=...
//	{base_url}/openai/deployments/{model}/embeddings?api-version=...
//	{base_url}/openai/v1/responses (GET and DELETE /openai/v1/responses/{id})
//
// The key goes in an api-key header, never as a bearer token. The body is
// sent byte for byte as the call wrote it: Azure ignores its "model", so
// rewriting it would only risk changing what the client meant. The
// Responses API is the exception: Azure serves it on its v1 API, which
// takes no api-version and names the deployment as the body's "model",
// so that is set to the deployment's name (Request.Model).
//
// Azure answers OpenAI-shaped bodies, with its own error codes for what its
// gateway decides ({"error": {"code": "429" or "RateLimitReached", ...}});
// insufficient_quota is recognized as for OpenAI. Its headers are read by
// ParseOpenAIHeaders: x-ratelimit-remaining-requests and -tokens, limits
// when present (-1 or 0 read as unknown), retry-after-ms and retry-after.
// Azure sends no reset headers, so a remaining count of 0 comes without a
// time at which it ends.
type Azure struct{}

// Do implements Adapter.
func (Azure) Do(ctx context.Context, client *http.Client, req Request) (*Response, error) {
	if req.Endpoint == messages.EndpointResponseGet || req.Endpoint == messages.EndpointResponseDelete {
		h := jsonHeaders(req)
		h.Set("api-key", req.Secret)
		resp, _, err := doStored(ctx, client, req, strings.TrimSuffix(req.BaseURL, "/")+"/openai/v1", h)
		return resp, err
	}
	u, body, err := azureRequest(req)
	if err != nil {
		return nil, err
	}
	h := jsonHeaders(req)
	h.Set("api-key", req.Secret)
	a, err := post(ctx, client, u, h, body)
	if err != nil {
		return nil, err
	}
	return respond(a, parseOpenAIHeaders(a.header, answerTime(a.header, nil)), a.read(readOpenAIBody)), nil
}

// azureRequest is the URL and body of an Azure request.
func azureRequest(req Request) (string, []byte, error) {
	if req.Endpoint == messages.EndpointResponses {
		if req.Model == "" {
			return "", nil, fmt.Errorf("providers: azure needs the deployment name as the model")
		}
		body, err := withModel(req.Body, req.Model)
		if err != nil {
			return "", nil, err
		}
		return strings.TrimSuffix(req.BaseURL, "/") + "/openai/v1/responses", body, nil
	}
	u, err := azureURL(req)
	return u, req.Body, err
}

// azureURL builds the deployment's URL for the endpoint.
func azureURL(req Request) (string, error) {
	var op string
	switch req.Endpoint {
	case messages.EndpointChatCompletions:
		op = "chat/completions"
	case messages.EndpointCompletions:
		op = "completions"
	case messages.EndpointEmbeddings:
		op = "embeddings"
	default:
		return "", fmt.Errorf("%w: azure does not serve %q", ErrUnsupportedEndpoint, req.Endpoint)
	}
	if req.Model == "" {
		return "", fmt.Errorf("providers: azure needs the deployment name as the model")
	}
	version := req.APIVersion
	if version == "" {
		version = DefaultAzureAPIVersion
	}
	return strings.TrimSuffix(req.BaseURL, "/") + "/openai/deployments/" + url.PathEscape(req.Model) + "/" + op +
		"?api-version=" + url.QueryEscape(version), nil
}
