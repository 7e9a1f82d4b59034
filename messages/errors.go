package messages

import (
	"fmt"
	"time"
)

// Code is a machine-readable error code carried by every error result.
type Code string

// Error codes. A client may branch on these; the message is for people.
const (
	// CodeInvalidRequest: the call could not be parsed or failed validation.
	// Error.Field names the offending field where there is one.
	CodeInvalidRequest Code = "invalid_request"
	// CodeUnknownModel: no pool of that name is configured.
	CodeUnknownModel Code = "unknown_model"
	// CodeForbidden: the team is unknown, or may not use the tier or pool.
	CodeForbidden Code = "forbidden"
	// CodeQueueFull: the team has too many calls waiting; back off for
	// Error.RetryAfterMS.
	CodeQueueFull Code = "queue_full"
	// CodeDeadlineExceeded: the call's deadline passed before it could finish.
	CodeDeadlineExceeded Code = "deadline_exceeded"
	// CodeRateLimited: the provider kept answering 429 and sluice gave up
	// after its attempts.
	CodeRateLimited Code = "rate_limited"
	// CodeProviderError: the provider answered with an error that retrying
	// does not fix (4xx), kept failing (5xx, timeouts) until the attempts ran
	// out, or answered something that is not JSON. Error.ProviderStatus holds
	// its HTTP status and Result.Body its answer.
	CodeProviderError Code = "provider_error"
	// CodeCanceled: the client canceled the call (on its cancel subject)
	// before it finished.
	CodeCanceled Code = "canceled"
	// CodeInternal: sluice itself failed; the message says how.
	CodeInternal Code = "internal"
	// CodeBudgetExhausted: the team's budget for the day or the month
	// (tokens or money, its own or in the pool) cannot hold the call's
	// worst case, and the team's budgets.at_limit says refuse.
	// Error.Budget says which budget, what is spent and reserved, and
	// when it resets; Error.RetryAfterMS is the time until then.
	CodeBudgetExhausted Code = "budget_exhausted"
)

// Codes lists every error code.
var Codes = []Code{
	CodeInvalidRequest, CodeUnknownModel, CodeForbidden, CodeQueueFull,
	CodeDeadlineExceeded, CodeRateLimited, CodeProviderError, CodeCanceled, CodeInternal,
	CodeBudgetExhausted,
}

// Error is the error part of a result. It implements error, and errors.Is
// matches it against the sentinels below by code alone:
//
//	if errors.Is(res.Err(), messages.ErrDeadlineExceeded) { ... }
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// Field names the request field that failed validation, if any.
	Field string `json:"field,omitempty"`
	// ProviderStatus is the provider's HTTP status, for provider errors.
	ProviderStatus int `json:"provider_status,omitempty"`
	// RetryAfterMS suggests how long to wait before trying again
	// (queue_full, rate_limited, budget_exhausted).
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
	// Budget is the budget that refused the call (budget_exhausted).
	Budget *BudgetExhausted `json:"budget,omitempty"`
}

// BudgetExhausted says which budget could not hold a call, and how far
// it is spent.
type BudgetExhausted struct {
	Team string `json:"team"`
	// Pool is set when the team's budget in that pool refused; empty for
	// the team's own budget, over every pool.
	Pool string `json:"pool,omitempty"`
	// Period is "day" or "month", PeriodID the one that refused
	// ("2026-12-04", "2026-12"), in the configured budgets.time_zone.
	Period   string `json:"period"`
	PeriodID string `json:"period_id"`
	// Unit is "tokens", or the currency of a money budget (prices.currency).
	Unit string `json:"unit"`
	// Limit is the budget; Spent and Reserved what calls spent and what
	// calls admitted but not finished hold of it; Need the call's worst
	// case. Spent + Reserved + Need is above Limit.
	Limit    float64 `json:"limit"`
	Spent    float64 `json:"spent"`
	Reserved float64 `json:"reserved"`
	Need     float64 `json:"need"`
	// ResetsAt is when the period ends and the budget starts again.
	ResetsAt time.Time `json:"resets_at"`
}

// Sentinels for errors.Is. Only their codes matter.
var (
	ErrInvalidRequest   = &Error{Code: CodeInvalidRequest}
	ErrUnknownModel     = &Error{Code: CodeUnknownModel}
	ErrForbidden        = &Error{Code: CodeForbidden}
	ErrQueueFull        = &Error{Code: CodeQueueFull}
	ErrDeadlineExceeded = &Error{Code: CodeDeadlineExceeded}
	ErrRateLimited      = &Error{Code: CodeRateLimited}
	ErrProviderError    = &Error{Code: CodeProviderError}
	ErrCanceled         = &Error{Code: CodeCanceled}
	ErrInternal         = &Error{Code: CodeInternal}
	ErrBudgetExhausted  = &Error{Code: CodeBudgetExhausted}
)

// Errorf builds an Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldError builds an invalid_request Error naming a field.
func FieldError(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidRequest, Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// Is matches any *Error with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}
