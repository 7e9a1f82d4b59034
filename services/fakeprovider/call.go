package fakeprovider

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// maxBody bounds a request body. OpenAI's own limit is in the tens of
// megabytes; this is enough for any test and keeps token counts small
// enough for the buckets' fixed point.
const maxBody = 32 << 20

// call carries one metered request (chat or embeddings) through the steps
// every such request takes: authentication, quota, validation, admission,
// injected faults, answer, settlement. Each step that ends the call writes
// the response and records exactly one outcome.
type call struct {
	s     *Server
	w     http.ResponseWriter
	r     *http.Request
	start time.Time // wall clock, for openai-processing-ms
	// arrived is Config.Clock's reading when the request arrived: the
	// time its admission counts at.
	arrived time.Time
	id      string
	key     string   // "" until authenticated
	model   string   // for the 429 message, once parsed
	view    rateView // the key's buckets or windows as the headers report them
	adm     admission
	d       dialect
}

// begin authenticates the call in dialect d, checks what d requires
// besides the key, and reads the body. It returns false when the call has
// already been answered.
func (s *Server) begin(w http.ResponseWriter, r *http.Request, d dialect) (*call, []byte, bool) {
	c := &call{s: s, w: w, r: r, start: time.Now(), arrived: s.cfg.Clock(), id: w.Header().Get("x-request-id"), d: d}
	clientID := r.Header.Get(ClientRequestIDHeader)
	s.calls.count(clientID)
	if s.cfg.Arrived != nil {
		s.cfg.Arrived(clientID, c.arrived)
	}
	key := d.key(r)
	kc, ok := s.limits.lookup(key)
	if !ok {
		s.stats.received("")
		c.fail(d.invalidKey(), outUnauthorized)
		return nil, nil, false
	}
	c.key = key
	s.stats.received(key)
	c.view = s.limits.peek(key)
	if e := d.check(r); e != nil {
		c.fail(e, outInvalid)
		return nil, nil, false
	}
	// Quota is checked before the body, as every call on a spent key fails
	// the same way whatever it asks.
	if kc.InsufficientQuota {
		c.fail(d.insufficientQuota(), outInsufficientQuota)
		return nil, nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			c.fail(&apiError{status: http.StatusRequestEntityTooLarge, typ: typeInvalidRequest,
				message: fmt.Sprintf("Request body larger than %d bytes.", maxBody)}, outInvalid)
		} else {
			c.fail(errBadJSON, outInvalid)
		}
		return nil, nil, false
	}
	return c, body, true
}

// checkModel refuses models outside Config.Models, when that is set.
func (c *call) checkModel(m string) bool {
	c.model = m
	if len(c.s.cfg.Models) == 0 || slices.Contains(c.s.cfg.Models, m) {
		return true
	}
	c.fail(c.d.modelNotFound(m), outInvalid)
	return false
}

// admit charges one request and tokens, or answers 429.
func (c *call) admit(tokens int64) bool {
	c.adm = c.s.limits.admit(c.key, tokens, c.arrived)
	c.view = c.adm.view
	if c.adm.ok {
		c.s.stats.admitted(c.key, c.adm.at, tokens)
		return true
	}
	o := outRateLimitedRequests
	if c.adm.limitedBy == "tokens" {
		o = outRateLimitedTokens
	}
	if form := c.s.cfg.RateLimitBody; form == RateLimitBodyGemini || form == RateLimitBodyGeminiArray {
		// Google sends no rate-limit headers at all: the body is the hint.
		c.end(o, http.StatusTooManyRequests, usage{})
		writeJSON(c.w, http.StatusTooManyRequests, geminiRateLimitBody(c.adm, c.adm.retryAfter, form == RateLimitBodyGeminiArray))
		return false
	}
	// A call too large for a window is told so without a retry hint:
	// waiting would not help it.
	if !c.adm.tooLarge {
		c.d.setRetryHeaders(c.w.Header(), c.adm.retryAfter)
	}
	c.fail(c.d.rateLimited(c.model, c.adm, tokens), o)
	return false
}

// proceed applies the injected faults and latency to an admitted call. It
// returns false when the call has ended there.
func (c *call) proceed() bool {
	b := c.s.behavior.Load()
	switch c.s.dice.decide(*b) {
	case faultTimeout:
		// Hang until the client gives up: the provider took the call and
		// never answered. The tokens were never used.
		select {
		case <-c.r.Context().Done():
		case <-c.s.closing:
		}
		c.s.limits.settle(c.adm.ticket, 0)
		if c.r.Context().Err() != nil {
			c.end(outTimeout, 0, usage{}) // nobody is left to answer
		} else {
			// Close released the call: answer rather than let net/http
			// send an empty 200 for a handler that wrote nothing.
			c.fail(c.d.serverError(http.StatusServiceUnavailable), outTimeout)
		}
		return false
	case faultError:
		if !c.sleep(b.latency + c.s.dice.jitter(b.latencyJitter)) {
			return false
		}
		c.s.limits.settle(c.adm.ticket, 0)
		c.fail(c.d.serverError(c.s.dice.errorStatus(b.errorStatus)), outInjectedError)
		return false
	case faultOverload:
		if !c.sleep(b.latency + c.s.dice.jitter(b.latencyJitter)) {
			return false
		}
		c.s.limits.settle(c.adm.ticket, 0)
		c.fail(c.d.overloaded(), outOverloaded)
		return false
	}
	return c.sleep(b.latency + c.s.dice.jitter(b.latencyJitter))
}

// sleep waits d, or ends the call as canceled if the client goes away
// first.
func (c *call) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.r.Context().Done():
		c.s.limits.settle(c.adm.ticket, 0)
		c.end(outCanceled, 0, usage{})
		return false
	}
}

// succeed settles the call against its usage, counts it served and writes
// v. Settlement comes before the write, so that a client that has read
// the answer finds the refund already in the bucket.
func (c *call) succeed(v any, u usage) {
	c.s.limits.settle(c.adm.ticket, u.TotalTokens)
	c.end(outServed, http.StatusOK, u)
	c.setHeaders()
	writeJSON(c.w, http.StatusOK, v)
}

// fail answers e in the call's dialect.
func (c *call) fail(e *apiError, o outcome) {
	c.end(o, e.status, usage{})
	c.setHeaders()
	writeJSON(c.w, e.status, c.d.errorBody(e))
}

func (c *call) setHeaders() {
	h := c.w.Header()
	c.d.setRateHeaders(h, c.view, c.s.cfg.Clock())
	c.d.setCallHeaders(h, c.start)
}

// end records the outcome and logs the call.
func (c *call) end(o outcome, status int, u usage) {
	c.s.stats.end(c.key, o, c.adm.at, u)
	c.s.log.Debug("fakeprovider call",
		"request_id", c.id,
		"path", c.r.URL.Path,
		"key", redact(c.key),
		"model", c.model,
		"outcome", o.String(),
		"status", status,
		"total_tokens", u.TotalTokens)
}

// redact shortens a key for logs the way OpenAI's own messages do.
func redact(key string) string {
	if len(key) <= 8 {
		return "***"
	}
	return key[:3] + "..." + key[len(key)-4:]
}
