package messages

// Tier is a call's priority class. When a pool is contended, higher tiers
// are admitted first.
type Tier string

// The four tiers, highest first.
const (
	TierCritical Tier = "critical"
	TierHigh     Tier = "high"
	TierStandard Tier = "standard"
	TierBatch    Tier = "batch"
)

// Tiers lists every tier, highest priority first.
var Tiers = []Tier{TierCritical, TierHigh, TierStandard, TierBatch}

// Valid reports whether t is one of the four tiers.
func (t Tier) Valid() bool { return t.Rank() >= 0 }

// Rank is the tier's position in Tiers: 0 for critical, 3 for batch, -1 for
// an unknown tier.
func (t Tier) Rank() int {
	for i, x := range Tiers {
		if x == t {
			return i
		}
	}
	return -1
}
