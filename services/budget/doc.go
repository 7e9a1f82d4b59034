// Package budget owns the count of what teams spend against the budgets
// people allocated to them (config.TeamBudget): tokens and money, per
// calendar day and month of a configured time zone, per team and per
// team and pool.
//
// # Periods
//
// [PeriodOf] gives the day or the month that contains an instant in a
// location: its [Period.Start], its [Period.End] (the reset: the next
// period's start) and its [Period.ID] ("2026-12-04", "2026-12"), right
// across daylight saving changes (a day of 23 or 25 hours, a midnight
// that does not exist) and month ends.
//
// # The ledger
//
// A [State] is the count of one scope (a team, or a team in a pool): for
// the current day and month, and the ones before them, what was spent
// and what is reserved, in tokens and in money. Money is counted in
// integer micro-units of the currency ([Amount].Micros), so that a
// million additions do not drift. Its methods are pure arithmetic on a
// value, with the time passed in:
//
//   - [State.Reserve] admits a call's worst case (its token reservation,
//     and that reservation at the highest price) if every bound of the
//     scope still holds it, or refuses it with a [*Refusal] that says
//     which bound, what is spent and reserved, the limit, and when it
//     resets;
//   - [State.Settle] releases the reservation and adds what the call
//     really spent: an actual spend above the reservation is added in
//     full and its excess counted apart ([Counter].Over), never hidden;
//     a call without usage settles at its reservation, never at zero; a
//     soft threshold (config.Config.WarnAt) that the spend crosses is
//     reported once, as a [Crossing];
//   - [State.Release] gives back a reservation whose call spent nothing
//     (it was never sent);
//   - [State.ReserveUntil] is Reserve for a reservation that expires:
//     one whose settlement never comes (its dispatcher died) is charged
//     at its worst case at the start of the hour after its until, and
//     shown as such ([Counter].Expired), rather than held until the
//     month ends; a late settlement puts the real spend in its place.
//
// A state of a past period is never charged: the first operation of a
// new day or month rolls the count over, and the new period starts at
// zero. The period before is kept, so that a call admitted before a
// reset and settled after it is counted where it was reserved.
//
// # Shared state
//
// [Ledger] keeps one State per scope in the KV bucket SLUICE_BUDGET,
// shared by every dispatcher, and changes it with one compare-and-swap
// per scope (kvstate.Store.Update): the check and the charge are one
// atomic step, so concurrent calls never overspend a budget. A call
// bounded by several scopes is reserved in each, all or nothing. A
// refusal writes nothing, so a refusal made on the watched cache is
// made again on the stored count before it stands. [Charges], [Need]
// and [Spent] turn the configuration and a result into what the ledger
// counts.
//
// Fallbacks: a call a budget cannot hold goes where
// config.TeamBudget.Fallback (or PoolFallback) says; when it moves (to
// the batch tier, or another pool), it is charged to the budget that
// refused it without that budget's limits ([Charge.Unbounded]): its
// spend counts there, beyond the limit, and shows.
//
// What the package does not do: choose what happens to a refused call
// (config.TeamBudget.Fallback says; admission acts on it).
package budget
