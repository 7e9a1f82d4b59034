// Package concurrency bounds the calls in flight on each deployment
// (config.Deployment.MaxInFlight) across any number of dispatchers, with
// slots held as leases that expire on their own: a slot whose call never
// reports (its executor died) comes back at the end of its lease, and the
// slots of a dispatcher that died come back when its block expires.
//
// # The model
//
// Each dispatcher is a holder (its id names it). Per deployment, a holder
// leases a block of slots in a shared JetStream KV key, and admits calls
// against its own block locally, as in Doorman: most admissions and every
// release cost no KV operation. The key of a deployment holds
//
//	{"holders":{"d1":{"n":5,"exp":1735689600000000000,"want":5}}}
//
// the size n of each holder's block, when it expires (unix nanoseconds, on
// the holder's clock), and the holder's recent demand, want (see Sharing).
// A block counts against the deployment's maximum until exp (for other
// holders, until exp plus Options.ClockSkew), and the
// blocks that count never add up to more than the maximum: a holder grows
// its block only by what the others leave free, with compare-and-swap
// (Update at the revision read; Create for a missing key; on a conflict,
// read again and retry). Every write drops the blocks that expired.
//
// Per call, [Slots.Acquire] takes a slot of the holder's block, growing the
// block when it is full (by what is missing plus a spare), or fails with
// [ErrFull]; [Slots.Release] frees it when the attempt's report arrives; a
// slot whose lease passes without a release is freed all the same. Blocks
// are renewed every BlockTTL/3 while they are held, shrink back to recent
// demand at renewal (idle slots go back to the others, an idle holder's
// block goes away) and shrink at once when the maximum drops
// ([Slots.Tick]). [Slots.Stop] returns them: a clean shutdown frees every
// slot no call holds at once.
//
// # Sharing
//
// Without more, a holder that got the slots first would keep them for as
// long as its own calls keep them busy, and another holder could wait
// forever. So, as in Doorman's FAIR_SHARE, each block carries its holder's
// demand: the most calls it had in flight, or tried to have (a refused call
// counting as one more), since its last renewal. A refused holder writes
// its demand (once per level: a refusal at a demand already written costs
// no KV operation), with a block of no slots if it has none. While some
// holder wants more than its block, the deployment is contested and each
// holder keeps to its max-min fair share of the maximum, computed from
// everyone's demands: it admits no call beyond it, and its Tick shrinks its
// block to it as its calls end. With 5 slots and demands 1, 4 and 4, the
// shares are 1, 2 and 2. A demand written stands until its holder's next
// renewal, so a holder whose demand vanished holds the others to their
// shares for up to BlockTTL/3 more.
//
// Slack is limited too: a growth or a renewal keeps a spare of about a
// quarter of the calls in flight (Options.Spare), so that a steady load
// needs no write per call, but never more than half of the slots the other
// holders leave free.
//
// # A block outlives its calls' leases
//
// A block expires BlockTTL after it was last written plus the lease
// duration of the latest call, and never before the end of the lease of
// any call admitted on it: a holder admits a call from its block only if
// the block outlives the call's lease, and writes the block (extending it)
// otherwise. A dispatcher that dies leaves its calls running on the
// executors, whose reports go nowhere; were its block to expire a fixed
// BlockTTL after its last renewal, other dispatchers would take slots still
// in use, and the deployment would exceed its maximum. So the slots of a
// holder that died come back within the lease time plus BlockTTL plus
// ClockSkew after its death: the bound of a call whose executor died, plus
// a little; idle holders have small blocks (see Sharing), so little is
// held back that no call uses. The same
// rule makes a holder that cannot renew (cut off from NATS) stop admitting
// on its own before anyone else may take its slots: every lease it granted
// ends before its block does.
//
// # What is local
//
// A holder admits from its own block on what it knows of the other blocks:
// a cache kept by a KV watcher (see [Slots.Start]) and by its own writes.
// The blocks never add up to more than the maximum, whatever the cache
// says, since every block was grown with compare-and-swap. Only when the
// maximum shrinks (a live configuration change) do the blocks add up to
// more than the new maximum for a while; a holder then admits nothing
// beyond it by what its cache says, and the cache may be some milliseconds
// behind the other holders' writes: for that long, a call may be admitted
// against the old maximum, as if the new configuration had reached this
// dispatcher a moment later.
//
// A holder that restarts under the same id finds its old block in the KV:
// it counts the old block's slots as calls in flight until the block's
// expiry, since the calls of its earlier life may still be running.
//
// # Clocks
//
// Every expiry is decided on an injected [Clock], so that tests run on a
// manual clock. Holders on different machines disagree a little about the
// time: Options.ClockSkew bounds by how much.
package concurrency
