package dispatcher

import (
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/tokens"
)

// neverFits returns the refusal of a call whose token reservation (est)
// is more than any of cands, the deployments of pool it may use, could
// ever admit; nil when one could.
//
// What a deployment could ever admit is its configured tpm (0: no
// bound): a provider refuses any one request over its tokens per minute
// (OpenAI's "Request too large ... on tokens per min"), and sluice's send
// schedule admits a call up to that size once the schedule has been idle
// long enough for it (see limiter.Schedule), so any wait but this one
// ends. Limits learned from the provider below the configured ones are
// not read: they climb back, so a call they hold back waits rather than
// fails.
func neverFits(pool string, cands []*config.Deployment, regions []string, est tokens.Estimate) *messages.Error {
	need := est.Total()
	var most int64
	var mostOf []string
	for _, dep := range cands {
		switch {
		case dep.TPM <= 0 || need <= dep.TPM:
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
	return messages.FieldError("body",
		"the call reserves %d tokens (%d of prompt, as estimated, and %d it may generate), more than any deployment of %s admits: the most is %d tokens per minute (tpm of %s). A provider refuses a request over its tokens per minute, so the call could never be sent: shorten it or lower max_tokens",
		need, est.Prompt, est.Completion, where, most, strings.Join(mostOf, ", "))
}
