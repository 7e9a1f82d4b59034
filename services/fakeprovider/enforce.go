package fakeprovider

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// Enforcement models, the values of Config.Enforce and KeyConfig.Enforce.
const (
	// EnforceBucket enforces limits with continuously refilled token
	// buckets holding Quantum of the limit, as Anthropic documents.
	EnforceBucket = "bucket"
	// EnforceWindows enforces them with sliding windows counting the calls
	// admitted in (t-span, t], as providers that count "the last minute"
	// (and OpenAI's "60,000 RPM may be enforced as 1,000 per second") do.
	EnforceWindows = "windows"
)

// Retry hints of a window's refusal, the values of Config.RetryAfter and
// KeyConfig.RetryAfter.
const (
	// RetryAfterFit asks to wait until the refused call would fit in every
	// window: until enough of the oldest calls have left.
	RetryAfterFit = "fit"
	// RetryAfterReset asks to wait until the refusing window holds nothing
	// it holds now, about its span: a strict provider whose minute must
	// free before it says anything else.
	RetryAfterReset = "reset"
)

// NoLimit as a Window's Requests or Tokens leaves that dimension unlimited
// in the window: a 1s window of requests only, say, on top of a minute of
// both.
const NoLimit = -1

// DefaultWindowSpan is the span of the one window a key enforcing windows
// has when neither it nor the Config gives any.
const DefaultWindowSpan = time.Minute

// Bounds on window spans and limits. A day covers providers' daily limits;
// the largest limit is a day of the largest per-minute one.
const (
	minSpan        = time.Microsecond
	maxSpan        = 24 * time.Hour
	maxWindowLimit = maxLimit * 24 * 60
)

// otherUseScale is the resolution of KeyConfig.OtherUse: shares are taken
// in millionths, in integers, so that 10 requests at 0.9 leave exactly 1
// rather than the 0.9999999999999998 of float arithmetic.
const otherUseScale = 1_000_000

// Window is one sliding window of the "windows" model. A call is admitted
// at t iff in every window the requests admitted in (t-Span, t], plus one,
// are within Requests, and the tokens counted there, plus the call's charge,
// within Tokens.
type Window struct {
	// Span is the window's length: 1µs to 24h.
	Span time.Duration `json:"span"`
	// Requests is the most requests the window admits. Zero derives it from
	// the key's RPM, ceil(RPM*Span/1m), so that a small limit still admits
	// something; NoLimit (-1) leaves requests unlimited in this window. A
	// key with no RPM has no derived request limit.
	Requests int64 `json:"requests,omitempty"`
	// Tokens is the most tokens the window counts. Zero derives it from
	// the key's TPM, floor(TPM*Span/1m), so that the windows never allow
	// more than the TPM; NoLimit (-1) leaves tokens unlimited here.
	Tokens int64 `json:"tokens,omitempty"`
}

func (w Window) validate() error {
	var errs []error
	if w.Span < minSpan || w.Span > maxSpan {
		errs = append(errs, fmt.Errorf("span %v outside %v..%v", w.Span, minSpan, maxSpan))
	}
	if w.Requests < NoLimit || w.Requests > maxWindowLimit {
		errs = append(errs, fmt.Errorf("requests %d outside -1..%d", w.Requests, int64(maxWindowLimit)))
	}
	if w.Tokens < NoLimit || w.Tokens > maxWindowLimit {
		errs = append(errs, fmt.Errorf("tokens %d outside -1..%d", w.Tokens, int64(maxWindowLimit)))
	}
	return errors.Join(errs...)
}

func validateWindows(field string, ws []Window) error {
	var errs []error
	for i, w := range ws {
		if err := w.validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", field, i, err))
		}
	}
	return errors.Join(errs...)
}

func validateEnforce(field, v string) error {
	switch v {
	case "", EnforceBucket, EnforceWindows:
		return nil
	}
	return fmt.Errorf("%s %q is none of \"\", %q, %q", field, v, EnforceBucket, EnforceWindows)
}

func validateRetryAfter(field, v string) error {
	switch v {
	case "", RetryAfterFit, RetryAfterReset:
		return nil
	}
	return fmt.Errorf("%s %q is none of \"\", %q, %q", field, v, RetryAfterFit, RetryAfterReset)
}

// keyModel is a key's enforcement resolved against the Config's defaults:
// which model, and the limits the key may really use in it, OtherUse taken
// off.
type keyModel struct {
	windows bool
	// Bucket model: the rates the key may use, per minute; zero for a
	// dimension that is not limited.
	rpm, tpm int64
	// Windows model: its windows, and whether refusals ask to wait for a
	// reset rather than a fit.
	limits    []windowLimit
	resetHint bool
	// The per-minute limits the headers report: the configured ones, not
	// what is left of them after OtherUse.
	shownRPM, shownTPM int64
}

// keyModel resolves kc's enforcement against c's defaults. It reports the
// combinations that would leave a key unable to serve anything, or a field
// that would be ignored; kc must be valid on its own (KeyConfig.validate)
// and c's enforcement fields too.
func (c Config) keyModel(kc KeyConfig) (keyModel, error) {
	ppm := int64(math.Round(kc.OtherUse * otherUseScale))
	var errs []error
	if cmp.Or(kc.Enforce, c.Enforce, EnforceBucket) == EnforceBucket {
		if len(kc.Windows) > 0 {
			errs = append(errs, errors.New("windows set, but the key enforces bucket: give it enforce \"windows\""))
		}
		if kc.RetryAfter != "" {
			errs = append(errs, errors.New("retry_after set, but the key enforces bucket, whose retry hints are always a fit"))
		}
		m := keyModel{rpm: share(kc.RPM, ppm), tpm: share(kc.TPM, ppm), shownRPM: kc.RPM, shownTPM: kc.TPM}
		if kc.RPM > 0 && m.rpm == 0 {
			errs = append(errs, fmt.Errorf("other_use %v leaves none of rpm %d", kc.OtherUse, kc.RPM))
		}
		if kc.TPM > 0 && m.tpm == 0 {
			errs = append(errs, fmt.Errorf("other_use %v leaves none of tpm %d", kc.OtherUse, kc.TPM))
		}
		return m, errors.Join(errs...)
	}

	m := keyModel{windows: true, resetHint: cmp.Or(kc.RetryAfter, c.RetryAfter) == RetryAfterReset,
		shownRPM: kc.RPM, shownTPM: kc.TPM}
	ws, src := kc.Windows, "windows"
	if len(ws) == 0 {
		ws, src = c.Windows, "config.Windows"
	}
	if len(ws) == 0 {
		ws, src = []Window{{Span: DefaultWindowSpan}}, "the default window"
	}
	var longestReq, longestTok time.Duration // of windows with their own limits
	for i, w := range ws {
		name := fmt.Sprintf("%s[%d] (%v)", src, i, w.Span)
		l := windowLimit{span: w.Span}
		switch req := w.Requests; {
		case req == 0 && kc.RPM > 0:
			l.requests = share(perSpan(kc.RPM, w.Span, true), ppm)
		case req > 0:
			l.requests = share(req, ppm)
			if kc.RPM == 0 && w.Span > longestReq {
				longestReq, m.shownRPM = w.Span, perMinute(req, w.Span)
			}
		}
		if (w.Requests > 0 || w.Requests == 0 && kc.RPM > 0) && l.requests == 0 {
			errs = append(errs, fmt.Errorf("%s: other_use %v leaves none of its requests", name, kc.OtherUse))
		}
		switch tok := w.Tokens; {
		case tok == 0 && kc.TPM > 0:
			derived := perSpan(kc.TPM, w.Span, false)
			if derived == 0 {
				errs = append(errs, fmt.Errorf("%s: tpm %d is no whole token per %v (floor(tpm*span/1m) = 0), so no call could ever fit: "+
					"give the window its own tokens, or -1 for none", name, kc.TPM, w.Span))
				continue
			}
			l.tokens = share(derived, ppm)
		case tok > 0:
			l.tokens = share(tok, ppm)
			if kc.TPM == 0 && w.Span > longestTok {
				longestTok, m.shownTPM = w.Span, perMinute(tok, w.Span)
			}
		}
		if (w.Tokens > 0 || w.Tokens == 0 && kc.TPM > 0) && l.tokens == 0 {
			errs = append(errs, fmt.Errorf("%s: other_use %v leaves none of its tokens", name, kc.OtherUse))
		}
		m.limits = append(m.limits, l)
	}
	return m, errors.Join(errs...)
}

// share is what is left of limit n once another consumer uses ppm
// millionths of it, rounded down: floor(n*(1e6-ppm)/1e6), exactly.
func share(n, ppm int64) int64 {
	keep := otherUseScale - ppm
	return n/otherUseScale*keep + n%otherUseScale*keep/otherUseScale
}

// perSpan is a per-minute limit over span, ceil(limit*span/1m) when up,
// floor otherwise, in 128 bits so that no product overflows.
func perSpan(perMin int64, span time.Duration, up bool) int64 {
	hi, lo := bits.Mul64(uint64(perMin), uint64(span))
	q, r := bits.Div64(hi, lo, uint64(time.Minute))
	if up && r > 0 {
		q++
	}
	return int64(q)
}

// perMinute is a window's limit as a rate per minute, for the headers of a
// key that states none: floor(n*1m/span), at least 1.
func perMinute(n int64, span time.Duration) int64 {
	hi, lo := bits.Mul64(uint64(n), uint64(time.Minute))
	if hi >= uint64(span) {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, uint64(span))
	return max(1, int64(min(q, math.MaxInt64)))
}
