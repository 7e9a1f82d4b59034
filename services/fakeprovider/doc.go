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
// Quantized windows. Providers state limits per minute but enforce them
// over shorter periods: 60,000 RPM may be enforced as about 1,000 per
// second, so a burst is refused long before the minute's total is reached.
// Each key has two continuously refilled token buckets, for requests and
// for tokens, refilling at limit/60 per second and holding
// limit*Quantum/1m (at least one request or token). Quantum defaults to
// 1s; a Quantum of 1m gives plain per-minute buckets. A new bucket is full.
//
// Admission-time charging. Like OpenAI, the fake charges tokens when it
// admits a call, before anything is generated: the estimated prompt plus
// max_tokens (or max_completion_tokens) times n, or plus DefaultMaxTokens
// when the request sets no limit; embeddings charge their input only. A
// call is refused unless both buckets cover it, and a refused call is
// charged nothing. A call whose charge exceeds the whole token capacity is
// admitted only when the bucket is full, and leaves it in debt.
//
// Settlement. When a call completes, the difference between the charge
// and the usage it reports is refunded to the token bucket, up to its
// capacity. A client that reserves a generous max_tokens thus pays for it
// while the call runs, which is what makes reservations matter.
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
//
// A chat call "generates" CompletionTokens per choice ("ok ok ok ..."),
// fewer if max_tokens says so, and reports that in its usage; a Messages
// call likewise, with stop_reason "max_tokens" when cut short.
//
// # The wire
//
// Every dialect meters the same keys in the same buckets and counters: a
// key is one account, whichever API it is used through.
//
// OpenAI: POST /v1/chat/completions (with "stream": true answered as
// server-sent events), POST /v1/embeddings, GET /v1/models. Keys are bearer
// tokens ("Authorization: Bearer <key>"). An unknown key gets 401
// invalid_api_key, unless AcceptAnyKey admits it with the DefaultKey
// limits. A refused call gets 429 with OpenAI's body (type "requests" or
// "tokens", code rate_limit_exceeded) and retry-after and retry-after-ms
// headers; a key marked InsufficientQuota gets 429 insufficient_quota on
// every call. Every answer to an authenticated call carries OpenAI's
// x-ratelimit-limit-*, x-ratelimit-remaining-* and x-ratelimit-reset-*
// headers.
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
// Anthropic: POST /v1/messages with the key in x-api-key and a required
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
// /fake/stats serves the counters as JSON and POST /fake/reset zeroes them
// and refills the buckets. The admin endpoints need no key: do not expose
// the fake where that matters.
//
// # Faults
//
// Latency and LatencyJitter delay admitted calls; ErrorRate answers a
// fraction of them with an injected 500 or 503; OverloadRate answers a
// fraction as overloaded (Anthropic's 529 overloaded_error, OpenAI's 503);
// TimeoutRate makes a fraction hang until the client gives up. The Set* methods change these,
// and a key's limits, while calls are in flight. Faults are drawn from a
// generator seeded by Config.Seed, and the buckets run on Config.Clock, so
// unit tests are deterministic.
//
// # Counters
//
// Stats (and GET /fake/stats) report, per key and in total, the calls
// received, served, refused by each bucket or for quota, invalid, failed
// by injection, overloaded, timed out, canceled and aborted mid-stream; the tokens
// served; the first and last served admissions; and the most calls and
// tokens admitted in any sliding 1s and 60s window, which is what a test
// compares with a limit to prove that sluice never exceeded it.
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
