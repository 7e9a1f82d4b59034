package config

import "github.com/sluicehq/sluice/messages"

// Unknown is the one name metric labels and usage roll-ups give a team,
// tier or pool the configuration does not know, so that names a client
// makes up (sluice.call.<anything>.<anything>, any model in a body) add
// no metric series or usage keys beyond one. Validation refuses it as
// the name of a team or a pool, and it is not a tier, so it never stands
// for a configured name.
const Unknown = "unknown"

// TeamLabel is team if the configuration knows it, else Unknown. A nil
// configuration knows no team.
func (c *Config) TeamLabel(team string) string {
	if c != nil {
		if _, ok := c.Teams[team]; ok {
			return team
		}
	}
	return Unknown
}

// PoolLabel is pool if the configuration has a pool of that name (the
// model clients ask for), else Unknown. A nil configuration knows no
// pool.
func (c *Config) PoolLabel(pool string) string {
	if c != nil {
		if _, ok := c.Pools[pool]; ok {
			return pool
		}
	}
	return Unknown
}

// TierLabel is tier if it is one of the four tiers, else Unknown.
func TierLabel(tier messages.Tier) string {
	if tier.Valid() {
		return string(tier)
	}
	return Unknown
}
