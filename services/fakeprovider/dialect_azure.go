package fakeprovider

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// This file is the Azure OpenAI dialect. Azure fronts OpenAI's models with
// its own gateway: the URL names a deployment and carries the api-version,
// the key is an api-key header, and the gateway's own errors (auth, rate
// limits, missing version, unknown deployment) are {"error": {"code",
// "message"}} with string codes. Whatever passes the gateway is answered
// by the model service exactly as OpenAI answers: same bodies, same 400s.
//
//	POST /openai/deployments/{deployment}/chat/completions?api-version=...
//	POST /openai/deployments/{deployment}/completions?api-version=...
//	POST /openai/deployments/{deployment}/embeddings?api-version=...
//
// The deployment is the model: it is checked against Config.Models and
// reported in answers; the body's model is ignored. Answers carry
// x-ratelimit-remaining-requests and -tokens, and a 429 retry-after-ms and
// retry-after; Azure sends no limit or reset headers.

const azurePrefix = "/openai/deployments/"

// Azure operations, as its 429 messages name them.
const (
	azureChat        = "chat/completions"
	azureCompletions = "completions"
	azureEmbeddings  = "embeddings"
)

// azureResponses is the path of Azure's Responses API, on its v1 API:
// no api-version, the deployment named as the body's model.
const azureResponses = "/openai/v1/responses"

// azurePath splits an Azure deployment URL path into the deployment and
// the operation.
func azurePath(path string) (deployment, op string, ok bool) {
	rest, ok := strings.CutPrefix(path, azurePrefix)
	if !ok {
		return "", "", false
	}
	deployment, op, ok = strings.Cut(rest, "/")
	if !ok || deployment == "" || (op != azureChat && op != azureCompletions && op != azureEmbeddings) {
		return "", "", false
	}
	return deployment, op, true
}

// handleAzure serves an Azure deployment's chat completions, completions
// or embeddings.
func (s *Server) handleAzure(w http.ResponseWriter, r *http.Request, deployment, op string) {
	d := azureDialect{apiVersion: r.URL.Query().Get("api-version"), operation: "ChatCompletions_Create"}
	switch op {
	case azureEmbeddings:
		d.operation = "Embeddings_Create"
		s.serveEmbeddings(w, r, d, deployment)
		return
	case azureCompletions:
		d.operation = "Completions_Create"
		s.serveCompletions(w, r, d, deployment)
		return
	}
	s.serveChat(w, r, d, deployment)
}

// azureDialect answers as Azure OpenAI does for one request.
type azureDialect struct {
	apiVersion string // from the URL
	operation  string // ChatCompletions_Create, Completions_Create or Embeddings_Create
}

// azureError is an error from Azure's gateway: code is a string, often
// the status itself ("401", "429").
func azureError(status int, code, message string) *apiError {
	return &apiError{status: status, message: message, code: code, gateway: true}
}

// azureErrorBody is the gateway's error body.
type azureErrorBody struct {
	Error azureErrorDetail `json:"error"`
}

type azureErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (azureDialect) key(r *http.Request) string { return strings.TrimSpace(r.Header.Get("api-key")) }

// check refuses a request without api-version, as Azure does for every
// data-plane call.
func (d azureDialect) check(*http.Request) *apiError {
	if d.apiVersion == "" {
		return azureError(http.StatusBadRequest, "MissingApiVersionParameter",
			"The api-version query parameter (?api-version=) is required for all requests.")
	}
	return nil
}

func (azureDialect) invalidKey() *apiError {
	return azureError(http.StatusUnauthorized, "401",
		"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "+
			"for an active subscription and use a correct regional API endpoint for your resource.")
}

func (azureDialect) insufficientQuota() *apiError {
	return azureError(http.StatusTooManyRequests, codeInsufficientQuota,
		"The quota of this resource is exhausted. Check the quota and billing of your subscription.")
}

func (azureDialect) modelNotFound(string) *apiError {
	return azureError(http.StatusNotFound, "DeploymentNotFound",
		"The API deployment for this resource does not exist. If you created the deployment within the last "+
			"5 minutes, please wait a moment and try again.")
}

// rateLimited is Azure's 429, which names the operation, the api-version,
// and whether calls or tokens ran out.
func (d azureDialect) rateLimited(_ string, a admission, requested int64) *apiError {
	if a.tooLarge {
		return azureError(http.StatusTooManyRequests, "429", fmt.Sprintf(
			"Requests to the %s Operation under Azure OpenAI API version %s have exceeded token rate limit of your "+
				"current OpenAI S0 pricing tier: this request asks for %d tokens, more than the limit of %d, and "+
				"retrying will not help. Reduce the prompt or max_tokens, or go to https://aka.ms/oai/quotaincrease "+
				"if you would like to further increase the default rate limit.",
			d.operation, d.apiVersion, requested, a.wholeLimit))
	}
	what := "call"
	if a.limitedBy == "tokens" {
		what = "token"
	}
	secs := max(1, ceilDiv(int64(a.retryAfter), int64(time.Second)))
	unit := "seconds"
	if secs == 1 {
		unit = "second"
	}
	return azureError(http.StatusTooManyRequests, "429", fmt.Sprintf(
		"Requests to the %s Operation under Azure OpenAI API version %s have exceeded %s rate limit of your "+
			"current OpenAI S0 pricing tier. Please retry after %d %s. Please go here: "+
			"https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
		d.operation, d.apiVersion, what, secs, unit))
}

func (azureDialect) serverError(status int) *apiError { return serverError(status) }
func (azureDialect) overloaded() *apiError            { return openAIDialect{}.overloaded() }

// errorBody renders gateway errors in Azure's shape and the model
// service's in OpenAI's.
func (azureDialect) errorBody(e *apiError) any {
	if e.gateway {
		return azureErrorBody{Error: azureErrorDetail{Code: e.code, Message: e.message}}
	}
	return e.body()
}

// setRateHeaders writes the remaining counts only: Azure sends no limits
// and no resets.
func (azureDialect) setRateHeaders(h http.Header, v rateView, _ time.Time) {
	if v.requests != nil {
		h.Set("x-ratelimit-remaining-requests", strconv.FormatInt(v.requests.remaining, 10))
	}
	if v.tokens != nil {
		h.Set("x-ratelimit-remaining-tokens", strconv.FormatInt(v.tokens.remaining, 10))
	}
}

func (azureDialect) setRetryHeaders(h http.Header, d time.Duration) { setRetryHeaders(h, d) }

func (azureDialect) setCallHeaders(h http.Header, start time.Time) {
	openAIDialect{}.setCallHeaders(h, start)
}
