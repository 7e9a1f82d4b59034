// Package limiter owns sluice's shared rate-limit state, in two kinds,
// both with two dimensions, requests per minute (RPM) and tokens per
// minute (TPM):
//
//   - send schedules ([Schedule], one per deployment): when each call to a
//     deployment may be sent, so that what reaches its provider stays
//     inside the windows it enforces ([Fit] picks the rate and capacity);
//   - token buckets ([Bucket], one per key): the shares people allocate
//     (team caps and guarantees, tier minimums, the critical reserve, the
//     batch gate), which admission takes from or charges.
//
// # Token buckets
//
// A [Bucket] holds a level per dimension that refills at the limit's rate up
// to its capacity (the burst). A bucket that was never used is full. A take
// asks for an amount between a minimum and a maximum: the bucket grants as
// much as it holds up to the maximum, or nothing at all when it holds less
// than the minimum. Because a token bucket can never hold more than its
// capacity, the amount granted over any window of length T is at most
//
//	capacity + rate*T
//
// plus the size of one oversized grant: a call larger than the whole
// capacity (a huge prompt) is admitted when the bucket is full and leaves it
// in debt, which refill repays before anything else is granted. Without that
// exception such a call could never be admitted.
//
// The math lives in pure functions on [Bucket] and [Limit], shared by every
// implementation, so that they cannot disagree.
//
// # Implementations
//
// [Memory] keeps buckets in a map: one process, tests.
//
// [KV] keeps one JetStream KV key per bucket, shared by any number of
// dispatcher processes. It updates a key with compare-and-swap and keeps a
// local cache of the latest value and revision of every key, fed by a KV
// watcher and by its own writes, so that the common Take costs one KV
// operation and Available costs none. That machinery is package kvstate's,
// shared with the concurrency slots and the deployments' health.
//
// [Leases] sits in front of any [Limiter] inside one process. Compare-and-swap
// on one hot key collapses when many processes write it (measured: 9.5k
// updates/s with one writer, 2.2k with sixteen, 92% of them failing), so a
// process leases a chunk of capacity sized to its own recent demand and
// spends it locally for a short TTL. Most admissions then need no KV
// operation at all. Leasing costs a little precision: see [Leases] for the
// bound it keeps.
//
// # Send schedules
//
// A [Schedule] is the shared state of one deployment's schedule (see its
// doc for the model and the bound it keeps). [KVScheduler] keeps one
// JetStream KV key per schedule, as [KV] does for buckets; a [Pacer] in
// each process leases stretches of the shared schedules and gives each
// admitted call its send time from them, so that a queue costs one KV
// operation per lease rather than per call. The contract suite in package
// limitertest holds every [Scheduler] to Schedule's semantics.
//
// # Clocks
//
// Every implementation reads time from an injected [Clock], so tests run on a
// manual clock. Dispatchers on different machines disagree a little about
// the time: a bucket never moves its timestamp backwards and never refills
// for negative elapsed time, so a slow clock refills less, never more.
package limiter
