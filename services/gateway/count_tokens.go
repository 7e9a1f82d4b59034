package gateway

import (
	"net/http"

	"github.com/sluicehq/sluice/services/tokens"
)

// HeaderEstimated marks an answer sluice estimated itself, which no
// provider was asked for: count_tokens on a pool whose count_tokens is
// "estimate".
const HeaderEstimated = "x-sluice-estimated"

// answerTokenEstimate answers a count_tokens call with sluice's estimate,
// in Anthropic's shape ({"input_tokens": n}), without a provider request:
// nothing is admitted, reserved or counted against the pool's limits.
func answerTokenEstimate(w http.ResponseWriter, d dialect, body []byte) {
	n, bad := tokens.CountTokensInput(body)
	if bad != nil {
		writeError(w, d, fromCallError(bad))
		return
	}
	w.Header().Set(HeaderEstimated, "true")
	writeJSON(w, http.StatusOK, map[string]int64{"input_tokens": n})
}
