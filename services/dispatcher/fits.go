package dispatcher

import (
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/tokens"
)

// What a deployment could ever admit of one call is its configured tpm
// (0: no bound): a provider refuses any one request over its tokens per
// minute (OpenAI's "Request too large ... on tokens per min"), and
// sluice's send schedule admits a call up to that size once the schedule
// has been idle long enough for it (see limiter.Schedule), so any wait
// but this one ends. Limits learned from the provider below the
// configured ones are not read: they climb back, so a call they hold
// back waits rather than fails.

// admits reports whether dep could ever admit a call reserving tokens.
func admits(dep *config.Deployment, tokens float64) bool {
	return dep.TPM <= 0 || tokens <= float64(dep.TPM)
}

// admitting returns the deployments of cands that could ever admit a
// call reserving tokens: cands itself when all of them could.
func admitting(cands []*config.Deployment, tokens float64) []*config.Deployment {
	for i, dep := range cands {
		if admits(dep, tokens) {
			continue
		}
		out := append([]*config.Deployment(nil), cands[:i]...)
		for _, dep := range cands[i+1:] {
			if admits(dep, tokens) {
				out = append(out, dep)
			}
		}
		return out
	}
	return cands
}

// neverFits returns the refusal of a call reserving need tokens (of
// which breakdown, if not empty, says how they add up) that none of
// cands, the deployments of pool it may use, could ever admit; nil when
// one could, or when cands is empty.
func neverFits(pool string, cands []*config.Deployment, regions []string, need int64, breakdown string) *messages.Error {
	var most int64
	var mostOf []string
	for _, dep := range cands {
		switch {
		case admits(dep, float64(need)):
			return nil
		case dep.TPM > most:
			most, mostOf = dep.TPM, []string{dep.ID}
		case dep.TPM == most:
			mostOf = append(mostOf, dep.ID)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	where := fmt.Sprintf("pool %q", pool)
	if len(regions) > 0 {
		where += " in regions " + strings.Join(regions, ", ")
	}
	if breakdown != "" {
		breakdown = " (" + breakdown + ")"
	}
	return messages.FieldError("body",
		"the call reserves %d tokens%s, more than any deployment of %s admits: the most is %d tokens per minute (tpm of %s). A provider refuses a request over its tokens per minute, so the call could never be sent: shorten it or lower max_tokens",
		need, breakdown, where, most, strings.Join(mostOf, ", "))
}

// estimated says how an estimate adds up, for neverFits.
func estimated(est tokens.Estimate) string {
	return fmt.Sprintf("%d of prompt, as estimated, and %d it may generate", est.Prompt, est.Completion)
}
