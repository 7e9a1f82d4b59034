package tracing

import (
	"go.opentelemetry.io/otel/attribute"

	"github.com/sluicehq/sluice/messages"
)

// Span names. The executor's attempt span is named after the GenAI
// conventions instead: "<gen_ai.operation.name> <gen_ai.request.model>".
const (
	SpanQueue  = "sluice.queue"  // dispatcher: from acceptance to admission
	SpanAdmit  = "sluice.admit"  // dispatcher: the deployment chosen, until its work is stored
	SpanResult = "sluice.result" // the terminal result published
	SpanRetry  = "sluice.retry"  // executor: a retry handed back to admission
)

// sluice's own attributes. None holds a secret: deployments are named by
// id, keys never.
const (
	AttrCallID         = attribute.Key("sluice.call.id")
	AttrTeam           = attribute.Key("sluice.team")
	AttrTier           = attribute.Key("sluice.tier")
	AttrPool           = attribute.Key("sluice.pool")
	AttrAttempt        = attribute.Key("sluice.attempt")
	AttrAdmission      = attribute.Key("sluice.admission")
	AttrDeployment     = attribute.Key("sluice.deployment")
	AttrRegion         = attribute.Key("sluice.region")
	AttrReservedTokens = attribute.Key("sluice.reserved_tokens")
	AttrSendDelayMS    = attribute.Key("sluice.send_delay_ms")
	AttrOutcome        = attribute.Key("sluice.outcome")
	AttrErrorCode      = attribute.Key("sluice.error.code")
)

// OpenTelemetry semantic conventions sluice uses (GenAI and HTTP). The
// GenAI ones are still in development, and semconv packages move them
// between versions, so they are spelled out here.
const (
	AttrGenAISystem        = attribute.Key("gen_ai.system") // the older name of gen_ai.provider.name
	AttrGenAIProviderName  = attribute.Key("gen_ai.provider.name")
	AttrGenAIOperationName = attribute.Key("gen_ai.operation.name")
	AttrGenAIRequestModel  = attribute.Key("gen_ai.request.model")
	AttrGenAIResponseModel = attribute.Key("gen_ai.response.model")
	AttrGenAIInputTokens   = attribute.Key("gen_ai.usage.input_tokens")
	AttrGenAIOutputTokens  = attribute.Key("gen_ai.usage.output_tokens")
	AttrErrorType          = attribute.Key("error.type")
	AttrHTTPStatusCode     = attribute.Key("http.response.status_code")
	AttrHTTPMethod         = attribute.Key("http.request.method")
	AttrHTTPRoute          = attribute.Key("http.route")
)

// GenAIProvider is the gen_ai.provider.name of a deployment's provider
// (as the configuration names it: openai, azure, anthropic).
func GenAIProvider(provider string) string {
	switch provider {
	case "azure":
		return "azure.ai.openai"
	default:
		return provider
	}
}

// GenAIOperation is the gen_ai.operation.name of a call to endpoint.
func GenAIOperation(endpoint messages.Endpoint) string {
	switch endpoint {
	case messages.EndpointChatCompletions, messages.EndpointMessages, messages.EndpointResponses:
		return "chat"
	case messages.EndpointCompletions:
		return "text_completion"
	case messages.EndpointEmbeddings:
		return "embeddings"
	case messages.EndpointCountTokens:
		return "count_tokens"
	case messages.EndpointResponseGet:
		return "get_response"
	case messages.EndpointResponseDelete:
		return "delete_response"
	default:
		return string(endpoint)
	}
}

// CallAttributes name a ticket's call on its spans: its id, team, tier,
// pool, attempt and admission.
func CallAttributes(t *messages.Ticket) []attribute.KeyValue {
	return []attribute.KeyValue{
		AttrCallID.String(t.Call.ID),
		AttrTeam.String(t.Team),
		AttrTier.String(string(t.Tier)),
		AttrPool.String(t.Call.Model),
		AttrAttempt.Int(t.Attempt),
		AttrAdmission.Int(t.Admission),
	}
}
