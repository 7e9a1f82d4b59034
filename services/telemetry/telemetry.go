// Package telemetry owns sluice's Prometheus metrics: their names, help
// texts and labels, in one place, so that dashboards and alert rules have
// one list to check against.
//
// Labels hold teams, tiers, pools, deployment ids, regions, outcomes and
// status codes: never a provider key or any other secret.
package telemetry

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are every metric sluice's services record. Several services in
// one process (as in `sluice dev`) share one set: New returns collectors
// already registered on reg instead of failing.
type Metrics struct {
	// Calls counts terminal results by team, tier and outcome ("ok" or the
	// error code).
	Calls *prometheus.CounterVec
	// QueueWait observes how long calls waited for admission, per pool and
	// tier.
	QueueWait *prometheus.HistogramVec
	// QueueDepth is the number of calls waiting in this dispatcher, per pool
	// and tier.
	QueueDepth *prometheus.GaugeVec
	// QueueOldest is how long the oldest call waiting in this dispatcher
	// has waited, per pool and tier (absent when none waits).
	QueueOldest *prometheus.GaugeVec
	// QueueDeadlineUsed is, of the calls waiting in this dispatcher, the
	// largest share of its own deadline budget (from acceptance to
	// deadline) a call has used up, by pool and tier: what queue-age
	// alerts compare, whatever each call's deadline.
	QueueDeadlineUsed *prometheus.GaugeVec
	// Admissions counts calls admitted to each deployment.
	Admissions *prometheus.CounterVec
	// TokensReserved counts TPM reserved at admission, per team, pool and
	// deployment.
	TokensReserved *prometheus.CounterVec
	// TokensUsed counts tokens the providers reported, per team, pool and
	// deployment.
	TokensUsed *prometheus.CounterVec
	// ProviderRequests counts provider requests by deployment, region and
	// HTTP status, or when there was none "timeout" (the attempt timeout),
	// "transport", or "deadline" (the call's own deadline cut it).
	ProviderRequests *prometheus.CounterVec
	// ProviderLatency observes provider request durations.
	ProviderLatency *prometheus.HistogramVec
	// Provider429s counts 429 answers per deployment.
	Provider429s *prometheus.CounterVec
	// LateWork counts work an executor handed back to admission unsent,
	// per region and reason: "late" (taken after its send-by time) or
	// "shutdown" (the executor stopped before its send time).
	LateWork *prometheus.CounterVec
	// Retries counts attempts handed back for a retry, per deployment and
	// reason (429, 5xx, timeout, transport).
	Retries *prometheus.CounterVec
	// InFlight is the number of provider requests an executor has open.
	InFlight *prometheus.GaugeVec
	// BudgetUsed is the share of a team's budget (its own, pool "", or
	// in a pool) spent in the current day or month, per unit ("tokens"
	// or "cost"), as of the last call a dispatcher settled against it:
	// 1 is the whole budget; above 1 when providers charged more than
	// calls reserved.
	BudgetUsed *prometheus.GaugeVec
	// BudgetThresholds counts the soft thresholds (budgets.warn_at) a
	// team's spend crossed, per pool, period and threshold: once per
	// period each.
	BudgetThresholds *prometheus.CounterVec
	// BudgetRefused counts calls a team's budget could not hold, per
	// pool ("" for the team's own budget), period and what happened to
	// them (refused, batch, or moved to another pool).
	BudgetRefused *prometheus.CounterVec
	// LimiterOps counts KV operations of the shared limiter ("op": every
	// get, create and update; "conflict": those that lost a race).
	LimiterOps *prometheus.CounterVec
	// DeadLetters counts messages sent to the dead-letter stream, by reason.
	DeadLetters *prometheus.CounterVec
	// Stranded counts calls answered deadline_exceeded because no executor
	// of their region took their work, by region.
	Stranded *prometheus.CounterVec
	// RegionStalled is 1 for a region none of whose executors takes work,
	// as a dispatcher sees it.
	RegionStalled *prometheus.GaugeVec
	// RetryBudgetWaits counts retries that had to wait for their pool's
	// retry budget.
	RetryBudgetWaits *prometheus.CounterVec
	// CircuitTransitions counts circuit breaker state changes, by scope
	// (deployment or region), name and the state entered.
	CircuitTransitions *prometheus.CounterVec
	// DeploymentState is 1 for the state each deployment is in, as a
	// dispatcher sees it: ok, cooling, disabled, circuit_open,
	// circuit_half_open.
	DeploymentState *prometheus.GaugeVec
	// ScheduleSeconds and Scheduled are the time spent in admission passes
	// that admitted calls, and the calls they admitted: their ratio is the
	// scheduling cost per call.
	ScheduleSeconds prometheus.Counter
	Scheduled       prometheus.Counter
	// DeploymentLimit is the limit each deployment is admitted against now,
	// per minute, by dimension (requests, tokens): the configured one, or a
	// lower one its provider reported.
	DeploymentLimit *prometheus.GaugeVec
	// UsageMergeFailures counts usage roll-ups a flush could not merge
	// into SLUICE_USAGE, by fate: "retried" (kept for the next flush: NATS
	// unreachable, too much contention) or "dropped" (refused for a reason
	// retrying cannot fix, logged and given up).
	UsageMergeFailures *prometheus.CounterVec
}

// Buckets for latencies: 1ms to about 2 minutes.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2.5, 14)

// New creates sluice's metrics and registers them on reg (nil: a private
// registry nobody scrapes).
func New(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	return &Metrics{
		Calls: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_calls_total", Help: "Terminal results by team, tier and outcome (ok or the error code).",
		}, []string{"team", "tier", "outcome"})),
		QueueWait: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_queue_wait_seconds", Help: "Time calls waited for admission.", Buckets: latencyBuckets,
		}, []string{"pool", "tier"})),
		BudgetUsed: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_budget_used_ratio", Help: "Share of a team's budget spent in the current day or month (pool empty: the team's own budget), by unit (tokens or cost); 1 is the whole budget.",
		}, []string{"team", "pool", "period", "unit"})),
		BudgetThresholds: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_budget_thresholds_crossed_total", Help: "Soft budget thresholds (budgets.warn_at) a team's spend crossed, once per period each.",
		}, []string{"team", "pool", "period", "threshold"})),
		BudgetRefused: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_budget_refused_total", Help: "Calls a team's budget could not hold, by what happened to them: refused, batch (moved to the batch tier) or pool (moved to another pool).",
		}, []string{"team", "pool", "period", "action"})),
		QueueDepth: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_queue_depth", Help: "Calls waiting for admission in this dispatcher.",
		}, []string{"pool", "tier"})),
		QueueDeadlineUsed: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_queue_deadline_used_ratio", Help: "The largest share of its deadline budget (acceptance to deadline) a call waiting in this dispatcher has used, 0 to 1.",
		}, []string{"pool", "tier"})),
		QueueOldest: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_queue_oldest_wait_seconds", Help: "How long the oldest call waiting in this dispatcher has waited.",
		}, []string{"pool", "tier"})),
		Admissions: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_admissions_total", Help: "Calls admitted, by pool and deployment.",
		}, []string{"pool", "deployment"})),
		TokensReserved: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_tokens_reserved_total", Help: "Tokens reserved against TPM at admission.",
		}, []string{"team", "pool", "deployment"})),
		TokensUsed: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_tokens_used_total", Help: "Tokens the providers reported as used.",
		}, []string{"team", "pool", "deployment"})),
		ProviderRequests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_provider_requests_total", Help: "Provider requests by deployment, region and status.",
		}, []string{"deployment", "region", "status"})),
		ProviderLatency: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_provider_latency_seconds", Help: "Provider request duration.", Buckets: latencyBuckets,
		}, []string{"deployment", "region"})),
		LateWork: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_late_work_total", Help: "Work handed back to admission unsent, by region and reason (late, shutdown).",
		}, []string{"region", "reason"})),
		Provider429s: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_provider_429_total", Help: "429 answers from providers, by deployment.",
		}, []string{"deployment"})),
		Retries: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_retries_total", Help: "Attempts handed back for a retry, by deployment and reason.",
		}, []string{"deployment", "reason"})),
		InFlight: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_executor_in_flight", Help: "Provider requests an executor has open.",
		}, []string{"region"})),
		LimiterOps: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_limiter_kv_ops_total", Help: "KV operations of the shared limiter (kind=op), and those that lost a compare-and-swap race (kind=conflict).",
		}, []string{"kind"})),
		DeadLetters: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_dead_letters_total", Help: "Messages sent to the dead-letter stream, by reason.",
		}, []string{"reason"})),
		Stranded: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_stranded_work_total", Help: "Calls answered deadline_exceeded because no executor of their region took their work before the deadline, by region.",
		}, []string{"region"})),
		RegionStalled: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_region_stalled", Help: "1 for a region none of whose executors takes work (none runs, or work waits and none asks for it), as a dispatcher sees it; 0 otherwise.",
		}, []string{"region"})),
		RetryBudgetWaits: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_retry_budget_waits_total", Help: "Retries that waited for their pool's retry budget.",
		}, []string{"pool"})),
		CircuitTransitions: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_circuit_transitions_total", Help: "Circuit breaker state changes, by scope, name and state entered.",
		}, []string{"scope", "name", "state"})),
		DeploymentState: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_deployment_state", Help: "1 for the state a deployment is in: ok, cooling, disabled, circuit_open, circuit_half_open.",
		}, []string{"deployment", "state"})),
		ScheduleSeconds: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_schedule_seconds_total", Help: "Time spent in admission passes that admitted calls.",
		})),
		Scheduled: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_scheduled_total", Help: "Calls admitted; sluice_schedule_seconds_total over this is the scheduling cost per call.",
		})),
		DeploymentLimit: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_deployment_limit", Help: "The per-minute limit a deployment is admitted against now, by dimension.",
		}, []string{"deployment", "dimension"})),
		UsageMergeFailures: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_usage_merge_failures_total", Help: "Usage roll-ups a flush could not merge into SLUICE_USAGE, by fate (retried: kept for the next flush; dropped: refused for good).",
		}, []string{"fate"})),
	}
}

// register registers c, or returns the identical collector registered
// before.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic("telemetry: " + err.Error())
	}
	return c
}
