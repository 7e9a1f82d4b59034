package bench

// The targets of issue 11 the drain run checks.
const (
	// DrainTargetRatio is the least drain rate, as a share of the
	// unsaturated end-to-end rate.
	DrainTargetRatio = 0.5
	// CriticalTargetP99MS is the most critical calls may wait at p99
	// while the backlog drains.
	CriticalTargetP99MS = 50.0
)

// DrainReport is what the drain run measured.
type DrainReport struct {
	Machine     Machine `json:"machine"`
	Dispatchers int     `json:"dispatchers"`
	// Baseline is the unsaturated end-to-end rate: calls published with
	// at most Window in flight, from publish to result received.
	Baseline DrainBaseline `json:"baseline"`
	Drain    DrainRate     `json:"drain"`
	// Ratio is Drain.PerSecond over Baseline.PerSecond.
	Ratio    float64       `json:"ratio"`
	Critical CriticalWaits `json:"critical"`
	Memory   DrainMemory   `json:"memory"`
	// AfterPublish is where the backlog was when it was all published,
	// AtEnd when the drain was over.
	AfterPublish Backlog `json:"after_publish"`
	AtEnd        Backlog `json:"at_end"`
	// ProviderRefused counts the fake provider's 429s: there should be
	// none, its limits are far above the load, so that the dispatchers
	// (and the machine), not the provider, bound the drain.
	ProviderRefused int64 `json:"provider_429s"`
	// DrainTargetMet: Ratio >= DrainTargetRatio; CriticalTargetMet:
	// Critical.QueuedP99MS <= CriticalTargetP99MS, every critical call
	// answered.
	DrainTargetMet    bool `json:"drain_target_met"`
	CriticalTargetMet bool `json:"critical_target_met"`
}

// DrainBaseline is the unsaturated end-to-end measurement.
type DrainBaseline struct {
	Calls     int     `json:"calls"`
	Window    int     `json:"window"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	Failed    int64   `json:"failed"`
	// CPUMicrosPerCall is the CPU the whole process (NATS, sluice, fake
	// provider and the bench's own client) used per call.
	CPUMicrosPerCall float64 `json:"cpu_us_per_call"`
}

// DrainRate is the backlog's measurement.
type DrainRate struct {
	Backlog int `json:"backlog"`
	// PublishSeconds is how long publishing the backlog took, to the
	// last acknowledgement from JetStream.
	PublishSeconds float64 `json:"publish_seconds"`
	// WaitingAfterPublish is how many backlog calls had no result yet
	// when the last was published: the backlog the drain starts from.
	WaitingAfterPublish int `json:"waiting_after_publish"`
	// Drained counts the backlog's results after publishing; Left the
	// calls still without one when the drain's time was up (0: the whole
	// backlog drained).
	Drained int `json:"drained"`
	Left    int `json:"left"`
	// Seconds is from the end of publishing to the last result (to the
	// end of the drain's time, if calls were left), and PerSecond the
	// results received in it per second: the drain rate.
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	// OverallPerSecond is the backlog's results over the time from the
	// first publish to the last of them (or the end), publishing
	// included.
	OverallPerSecond float64 `json:"overall_per_second"`
	Failed           int64   `json:"failed"`
	CPUMicrosPerCall float64 `json:"cpu_us_per_call"`
}

// CriticalWaits are the waits of the critical calls published while the
// backlog drained, in milliseconds: queued is the admission wait sluice
// reports (Timings.QueuedMS), result the time from publish to result.
// Their percentiles are of the calls answered.
type CriticalWaits struct {
	Rate   float64 `json:"rate"`
	Calls  int     `json:"calls"`
	Failed int     `json:"failed"`
	// Unanswered counts the calls still without a result a few seconds
	// after the drain was over: they waited longer than any answered.
	Unanswered  int     `json:"unanswered"`
	QueuedP50MS float64 `json:"queued_p50_ms"`
	QueuedP99MS float64 `json:"queued_p99_ms"`
	QueuedMaxMS float64 `json:"queued_max_ms"`
	ResultP50MS float64 `json:"resultsp50_ms"`
	ResultP99MS float64 `json:"resultsp99_ms"`
	ResultMaxMS float64 `json:"resultsmax_ms"`
}

// DrainMemory is the heap of the whole process (NATS server, sluice, the
// bench's client alike: they share one process), in use after a
// collection, before the backlog and when it was all published.
type DrainMemory struct {
	HeapBeforeBytes uint64 `json:"heap_before_bytes"`
	HeapPeakBytes   uint64 `json:"heap_peak_bytes"`
	Waiting         int    `json:"waiting"`
	// BytesPerWaiting is the growth of the heap over the calls waiting:
	// an upper bound on what a waiting call costs the dispatchers, as it
	// includes what the embedded NATS server holds of it.
	BytesPerWaiting float64 `json:"bytes_per_waiting_call"`
	// StreamBytesPerWaiting is what the calls stream stores per message
	// at the same moment, for scale.
	StreamBytesPerWaiting float64 `json:"stream_bytes_per_waiting_call"`
}

// Backlog is where the calls without a result were at one moment.
type Backlog struct {
	// NotDelivered counts the calls the calls stream holds that the
	// dispatchers' consumer has not delivered yet; HeldByDispatchers
	// those it delivered and the dispatchers have not acknowledged yet
	// (waiting in their queues, or being admitted).
	NotDelivered      uint64 `json:"not_delivered"`
	HeldByDispatchers int    `json:"held_by_dispatchers"`
	// AtExecutors counts the admitted work waiting for, or held by, the
	// executors, over every region.
	AtExecutors uint64 `json:"at_executors"`
}
