package gateway

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
)

// Headers the gateway reads.
const (
	// HeaderTier names the call's tier: critical, high, standard or batch.
	HeaderTier = "X-Sluice-Tier"
	// HeaderTimeout is the call's timeout: a Go duration ("30s", "1m30s")
	// or seconds ("30", "2.5").
	HeaderTimeout = "X-Sluice-Timeout"
	// headerSDKTimeout is the timeout OpenAI's SDKs announce, in whole
	// seconds, when one is configured.
	headerSDKTimeout = "X-Stainless-Timeout"
)

// Headers the gateway sets on answers to calls.
const (
	HeaderCallID     = "x-sluice-call-id"
	HeaderDeployment = "x-sluice-deployment"
	HeaderRegion     = "x-sluice-region"
	HeaderAttempts   = "x-sluice-attempts"
	HeaderQueuedMS   = "x-sluice-queued-ms"
	// HeaderTraceID is the result's trace_id, when the call was traced.
	HeaderTraceID = "x-sluice-trace-id"
)

// caller is who is calling: the team its token names, and its
// configuration.
type caller struct {
	team string
	cfg  *config.Team
}

// identify maps the request's token to a team. The token itself is never
// logged nor echoed.
func identify(cfg *config.Config, r *http.Request, apiKeyHeader bool) (caller, *apiError) {
	token := ""
	if apiKeyHeader {
		token = strings.TrimSpace(r.Header.Get("x-api-key"))
	}
	if token == "" {
		if scheme, rest, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " "); ok && strings.EqualFold(scheme, "Bearer") {
			token = strings.TrimSpace(rest)
		}
	}
	if token == "" {
		msg := "no API key: send your team's sluice token as Authorization: Bearer <token>"
		if apiKeyHeader {
			msg = "no API key: send your team's sluice token as x-api-key: <token> or Authorization: Bearer <token>"
		}
		return caller{}, &apiError{Status: http.StatusUnauthorized, Code: "invalid_api_key", Message: msg}
	}
	team, ok := cfg.TeamOfToken(token)
	t := cfg.Teams[team]
	if !ok || t == nil {
		return caller{}, &apiError{Status: http.StatusUnauthorized, Code: "invalid_api_key",
			Message: "the API key is not one of sluice's team tokens (see `sluice token`)"}
	}
	return caller{team: team, cfg: t}, nil
}

// tierOf is the call's tier: X-Sluice-Tier, or the team's default.
func tierOf(c caller, r *http.Request) (messages.Tier, *apiError) {
	tier := c.cfg.DefaultTier
	if name := strings.TrimSpace(r.Header.Get(HeaderTier)); name != "" {
		tier = messages.Tier(strings.ToLower(name))
		if !tier.Valid() {
			return "", &apiError{Status: http.StatusBadRequest, Code: string(messages.CodeInvalidRequest),
				Message: "unknown tier " + strconv.Quote(name) + " in " + HeaderTier + "; tiers are critical, high, standard, batch"}
		}
	}
	if !c.cfg.AllowsTier(tier) {
		return "", &apiError{Status: http.StatusForbidden, Code: string(messages.CodeForbidden),
			Message: "team " + c.team + " may not use tier " + string(tier)}
	}
	return tier, nil
}

// timeoutOf is how long the call may take: X-Sluice-Timeout, else the
// SDK's X-Stainless-Timeout, else the request context's deadline, else
// the default. A deadline on the request's context shortens any of them.
// The result is within (0, calls.max_timeout].
func (g *Gateway) timeoutOf(cfg *config.Config, r *http.Request, now time.Time) (time.Duration, *apiError) {
	maxTimeout := cfg.Calls.MaxTimeout
	var timeout time.Duration
	if s := strings.TrimSpace(r.Header.Get(HeaderTimeout)); s != "" {
		d, ok := parseTimeout(s)
		if !ok {
			return 0, &apiError{Status: http.StatusBadRequest, Code: string(messages.CodeInvalidRequest),
				Message: HeaderTimeout + " must be a positive duration such as 30s, or seconds"}
		}
		if maxTimeout > 0 && d > maxTimeout {
			return 0, &apiError{Status: http.StatusBadRequest, Code: string(messages.CodeInvalidRequest),
				Message: HeaderTimeout + " is more than calls.max_timeout (" + maxTimeout.String() + ")"}
		}
		timeout = d
	} else if s := r.Header.Get(headerSDKTimeout); s != "" {
		if secs, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && secs > 0 {
			timeout = time.Duration(min(int64(secs), math.MaxInt64/int64(time.Second))) * time.Second
		}
	}
	if dl, ok := r.Context().Deadline(); ok && (timeout == 0 || dl.Sub(now) < timeout) {
		timeout = dl.Sub(now)
		if timeout <= 0 {
			return 0, &apiError{Status: http.StatusGatewayTimeout, Code: string(messages.CodeDeadlineExceeded),
				Message: "the request's deadline had passed when it arrived", NoRetry: true}
		}
	}
	if timeout == 0 {
		timeout = g.cfg.DefaultTimeout
	}
	if timeout == 0 {
		timeout = cfg.Calls.DefaultTimeout
	}
	if maxTimeout > 0 && timeout > maxTimeout {
		timeout = maxTimeout
	}
	return max(timeout, time.Millisecond), nil
}

// parseTimeout reads a Go duration or a number of seconds.
func parseTimeout(s string) (time.Duration, bool) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, d > 0
	}
	secs, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(secs) || secs <= 0 || secs > float64(math.MaxInt64/int64(time.Second)) {
		return 0, false
	}
	// Under a nanosecond is refused, as "0.0000000001s" is, rather
	// than read as no timeout at all (the default).
	d := time.Duration(secs * float64(time.Second))
	return d, d > 0
}
