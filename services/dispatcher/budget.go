package dispatcher

import "time"

// budgetWindow is the span over which a retry budget compares retries with
// first attempts, cut into budgetBuckets.
const (
	budgetWindow  = 10 * time.Second
	budgetBuckets = 10
)

// retryBudget bounds the retries of one pool to a fraction of its first
// attempts over a sliding window, plus a small floor so that a quiet pool
// can still retry (the scheme of Finagle's and gRPC's retry budgets). A
// retry over budget waits in the queue; it adds no traffic, so an outage
// never turns into a retry storm. Each dispatcher keeps its own budget
// over the calls it admits. It is not safe for concurrent use.
type retryBudget struct {
	firsts, retries [budgetBuckets]int
	at              [budgetBuckets]int64
}

// allows reports whether one more retry fits: retries < ratio × firsts +
// floorPerSecond × window.
func (b *retryBudget) allows(now time.Time, ratio, floorPerSecond float64) bool {
	firsts, retries := 0, 0
	cur := now.UnixNano() / int64(budgetWindow/budgetBuckets)
	for i := range b.at {
		if cur-b.at[i] < budgetBuckets {
			firsts += b.firsts[i]
			retries += b.retries[i]
		}
	}
	return float64(retries) < ratio*float64(firsts)+floorPerSecond*budgetWindow.Seconds()
}

// note counts an admitted attempt.
func (b *retryBudget) note(now time.Time, retry bool) {
	cur := now.UnixNano() / int64(budgetWindow/budgetBuckets)
	i := int(cur % budgetBuckets)
	if b.at[i] != cur {
		b.at[i], b.firsts[i], b.retries[i] = cur, 0, 0
	}
	if retry {
		b.retries[i]++
	} else {
		b.firsts[i]++
	}
}
