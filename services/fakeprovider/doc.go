// Package fakeprovider is an HTTP server that speaks the OpenAI, Azure
// OpenAI and Anthropic APIs and enforces per-key request and token limits
// the way real providers do.
//
// It serves two purposes. sluice's tests fake providers only at the HTTP
// boundary, and a fake that admits everything would prove nothing about a
// limiter: this one refuses what a real provider refuses, answers with the
// same bodies and headers, and counts what it served so that a test can
// check that sluice stayed within a limit. And `sluice fakeprovider` lets
// people try sluice without a provider account.
//
// # What it models
//
// Admission-time charging. Like OpenAI, the fake charges tokens when it
// admits a call, before anything is generated: the estimated prompt plus
// max_tokens (or max_completion_tokens) times n, or plus DefaultMaxTokens
// when the request sets no limit; embeddings charge their input only. A
// call is admitted only if its key's limits cover one more request and
// that charge; a refused call is charged nothing. When the call
// completes, the charge is squared with the usage it reports; a call that
// fails, is canceled or times out is squared with nothing used, and a
// stream cut short with what was sent. A client that reserves a generous
// max_tokens thus pays for it while the call runs, which is what makes
// reservations matter.
//
// Providers do not publish their algorithm, and users observe several (see
// PROVIDERS.md). Each key enforces its limits in one of two models,
// Config.Enforce for every key or KeyConfig.Enforce for one; the fake's
// models follow the providers' documented behaviour, not sluice's own
// limiter, so that sluice's tests can see it break against either.
//
// Buckets (EnforceBucket, the default). Two continuously refilled token
// buckets per key, for requests and for tokens, refilling at limit/60 per
// second and holding limit*Quantum/1m (at least one request or token).
// This is Anthropic's documented model, continuously replenished; Quantum
// sets the burst it allows: 1m a bucket of the whole minute's limit, the
// default 1s about a sixtieth of it, as providers that enforce a minute's
// limit over shorter periods allow. A new bucket is full. A call whose charge exceeds the whole token capacity
// is admitted only when the bucket is full, and leaves it in debt.
// Settlement refunds the difference between the charge and the usage, up
// to the capacity (or charges what was used beyond it). A refusal's
// retry-after is the time until both buckets cover the call. The headers
// report the configured limit, the whole requests or tokens left in the
// bucket, and the time until it is full again.
//
// Windows (EnforceWindows). Sliding windows, Config.Windows or
// KeyConfig.Windows, each a span with a request and a token limit derived
// from the key's RPM and TPM unless given: ceil(RPM*span/1m) requests,
// floor(TPM*span/1m) tokens (NoLimit leaves a dimension out of a window).
// Default: one window of a minute. A call counts at the moment its request
// arrived (as a provider's front door counts it, not when this server got
// round to reading its body; in every model), and is admitted at t iff, in every
// window, the requests admitted in (t-span, t] plus one are within its
// request limit and the tokens counted there plus the call's charge within
// its token limit: a call admitted at t0 leaves a window exactly at
// t0+span. A window counts a running call's charge, and a finished call's
// usage in its place, at the call's admission time. This is the provider
// that counts the last minute, where a burst at the start of a minute
// counts against the whole of it (one 1m window), and OpenAI's "60,000 RPM
// may be enforced as 1,000 per second" (a 1s window, or 100ms, on top of
// the minute; Tokens: NoLimit keeps the short window to requests, as
// OpenAI does not refuse a call for being over a second's share of the
// TPM). A charge larger than some window's whole token limit can never fit:
// it is refused at once with 429, OpenAI's "Request too large for <model>
// ... on tokens per min (TPM): Limit L, Requested R" (type tokens; each
// dialect in its own shape), with no retry-after and, in Google's form, no
// RetryInfo, since no wait helps; it counts as rate_limited_tokens.
//
// A window's refusal hints, through each dialect's retry-after,
// retry-after-ms or RetryInfo, one of two waits (Config.RetryAfter or
// KeyConfig.RetryAfter). RetryAfterFit, the default: until the call would
// fit in every window, enough of the oldest calls having left; a short
// window's refusal then says about a second, not a minute. RetryAfterReset:
// until the refusing window holds nothing it holds now, about its span: a
// strict provider that says retry-after 60 until its minute frees. The
// headers keep each dialect's names and shape: the limit is the configured
// per-minute one (for a key without RPM or TPM, its longest window's limit
// per minute), remaining is what the longest window has left (never
// negative), and reset the time until that window is empty.
//
// A key shared with an unseen consumer. KeyConfig.OtherUse, in [0, 1), is
// the share of every limit someone else uses on the key (another tool, a
// colleague's script): in either model the key admits only 1-OtherUse of
// each rate, capacity and window limit (rounded down), without saying why.
// Its headers still report the configured limits, and remaining what is
// left of the reduced capacity, as a provider counting the other
// consumer's calls would. A call too large for what is left to the key is
// refused as too large, naming that reduced limit.
//
// SetKey changes a key's limits, model, windows and OtherUse at once, while
// calls are in flight: bucket levels carry over clamped to the new
// capacities, windows keep counting the calls they hold, and a key that
// changes model starts the new one afresh.
//
// The token estimate is a documented rule, the one sluice's estimator
// uses too, so that fake and limiter agree exactly on what a call costs
// and a refusal is never an estimation gap. Lengths are in bytes:
//
//	chat        3 + 3 per message + ceil(len(content)/4) per message (per
//	            text part, for content given as parts) + 1 per name
//	messages    the chat rule, the system prompt (when present) counted as
//	            one more message; charged with max_tokens, which is required
//	embeddings  ceil(len(s)/4) per input string, or the number of token ids
//	completions the prompt as embeddings count it; charged with max_tokens
//	            (default 16) × best_of (else n) × prompts
//	responses   the chat rule, instructions (when given) as one message, a
//	            string input as one, each input item as one (its
//	            input_text, output_text and text parts, or an output
//	            string); charged with max_output_tokens (else
//	            DefaultMaxTokens)
//
// A chat call "generates" CompletionTokens per choice ("ok ok ok ..."),
// fewer if max_tokens says so, and reports that in its usage; a Messages
// call likewise, with stop_reason "max_tokens" when cut short.
//
// # The wire
//
// Every dialect meters the same keys in the same buckets or windows and
// counters: a key is one account, whichever API it is used through.
//
// OpenAI: POST /v1/chat/completions and the legacy POST /v1/completions
// (each with "stream": true answered as server-sent events), POST
// /v1/embeddings, GET /v1/models. A legacy completion's prompt is a
// string, strings, token ids or lists of them, counted as embeddings'
// input; it is charged max_tokens (default 16, as OpenAI documents) ×
// best_of (else n) × the prompts of a batch, each prompt getting n
// "text_completion" choices. Keys are bearer
// tokens ("Authorization: Bearer <key>"). An unknown key gets 401
// invalid_api_key, unless AcceptAnyKey admits it with the DefaultKey
// limits. A refused call gets 429 with OpenAI's body (type "requests" or
// "tokens", code rate_limit_exceeded) and retry-after and retry-after-ms
// headers; a key marked InsufficientQuota gets 429 insufficient_quota on
// every call. Every answer to an authenticated call carries OpenAI's
// x-ratelimit-limit-*, x-ratelimit-remaining-* and x-ratelimit-reset-*
// headers.
//
// The Responses API: POST /v1/responses (and Azure's v1 API, POST
// /openai/v1/responses, the deployment named as the body's model) answers
// a "response" object ("resp_..." id, status "completed", or "incomplete"
// when max_output_tokens, at least 16, cuts it short, one assistant
// message of output_text, usage in input_tokens, output_tokens and
// total_tokens). Responses are stored per key unless "store": false (at
// most MaxStoredResponses): GET and DELETE /v1/responses/{id} (admitted
// as one request and no tokens) find them only with the key that made
// them, else 404; a call with previous_response_id needs its key to hold
// that response (else 400 previous_response_not_found), and its input
// and output count in the new call's input_tokens.
//
// Azure OpenAI: POST /openai/deployments/{deployment}/chat/completions and
// /embeddings, with a required api-version query parameter (400
// MissingApiVersionParameter without it) and the key in an api-key header.
// The deployment is the model; the body's model is ignored. Azure's
// gateway errors are {"error": {"code", "message"}} with string codes (401
// "401", 429 "429" naming the operation and the api-version, 404
// DeploymentNotFound, 429 insufficient_quota); validation and server errors
// are OpenAI's. Answers carry x-ratelimit-remaining-requests and -tokens
// only, and a 429 retry-after-ms and retry-after.
//
// Anthropic: POST /v1/messages (and POST /v1/messages/count_tokens, the
// same body without max_tokens or stream, answered {"input_tokens": N} by
// the Messages rule and admitted as one request and no tokens) with the
// key in x-api-key and a required
// anthropic-version header (400 without it). Bodies are {model, max_tokens
// (required), messages: [{role: user|assistant, content: a string or
// blocks}], system: a string or text blocks, stream}. Answers are {"type":
// "message", "content": [{"type": "text", ...}], "usage": {"input_tokens",
// "output_tokens"}, ...}; with "stream": true, server-sent events in
// Anthropic's framing ("event: <type>\ndata: <json>\n\n"): message_start
// (with the input tokens), content_block_start, ping, a
// content_block_delta per token, content_block_stop, message_delta (the
// stop_reason and the output tokens) and message_stop. Errors are {"type":
// "error", "error": {"type", "message"}}, the type following the status
// (rate_limit_error for 429, overloaded_error for 529, ...). Answers carry
// anthropic-ratelimit-requests-* and -tokens-* headers (limit, remaining,
// and reset as an RFC 3339 instant rounded up to the second) with a Date
// from Config.Clock, and a 429 retry-after in seconds. A key marked
// InsufficientQuota gets Anthropic's 400 "Your credit balance is too low".
// Input and output tokens are not metered apart.
//
// Google-style 429s: with Config.RateLimitBody set to "gemini" (or
// "gemini-array"), every rate-limit 429, in every dialect, answers with
// Google's RESOURCE_EXHAUSTED body whose RetryInfo carries the wait in
// whole seconds ("17s"), and with no rate-limit or retry-after headers.
//
// Every answer carries x-request-id. For tests and operators, GET
// /fake/stats serves the counters as JSON, GET /fake/calls the requests per
// X-Client-Request-Id, and POST /fake/reset zeroes both, refills the
// buckets and empties the windows. The admin endpoints need no key: do not
// expose the fake where that matters.
//
// # Faults
//
// Latency and LatencyJitter delay admitted calls; ErrorRate answers a
// fraction of them with an injected 500 or 503; OverloadRate answers a
// fraction as overloaded (Anthropic's 529 overloaded_error, OpenAI's 503);
// TimeoutRate makes a fraction hang until the client gives up. The Set*
// methods change these, and a key's limits, while calls are in flight.
// Faults are drawn from a generator seeded by Config.Seed, and the buckets
// and windows run on Config.Clock, so unit tests are deterministic.
//
// # Counters
//
// Stats (and GET /fake/stats) report, per key and in total, the calls
// received, served, refused by each bucket or for quota, invalid, failed
// by injection, overloaded, timed out, canceled and aborted mid-stream; the tokens
// served; the first and last served admissions; and the most calls and
// tokens admitted in any sliding 1s and 60s window, which is what a test
// compares with a limit to prove that sluice never exceeded it, whatever
// the model. MaxRequestsIn answers the same for the spans of the
// configured windows and of Config.CountSpans, per key or in total; its
// memory is the admissions within each counted span.
//
// Requests per call. A request to a metered endpoint that carries an
// X-Client-Request-Id header (OpenAI documents it for a client's own
// request id; sluice's executors send the call's id in it) is counted
// under that value whatever its outcome, where Received is counted:
// RequestsByCallID and GET /fake/calls. At most MaxCallIDs (1,000,000)
// distinct ids of at most MaxCallIDLen (512) bytes are kept; a request
// with an id beyond those bounds is counted in CallCounts.Overflow
// instead.
//
// # Use
//
//	fake, err := fakeprovider.New(fakeprovider.Config{
//		Keys: map[string]fakeprovider.KeyConfig{"sk-test": {RPM: 600, TPM: 60_000}},
//	})
//	if err != nil { ... }
//	srv := httptest.NewServer(fake)
//	defer srv.Close()
//	defer fake.Close() // first: releases hung calls that srv.Close would wait for
//	// point the client at srv.URL + "/v1" with key "sk-test"
//	...
//	st := fake.Stats()
//	if st.Keys["sk-test"].Refused() > 0 { ... }
//
// Outside tests, Start(":8080") serves on an address until Close, and
// Serve(ctx, listener) serves until ctx is done.
package fakeprovider
