package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/messages"
)

// Team is what a team may do, and its share of each pool.
type Team struct {
	// Tiers the team may publish on. Default: every tier. An empty list
	// is every tier too: sluice stored teams without tiers that way in
	// KV before it left empty fields out, so it cannot be refused.
	Tiers []messages.Tier `yaml:"tiers,omitempty"`
	// DefaultTier is the tier of the team's calls that name none (the
	// gateway's). Default: standard if allowed, else the lowest allowed.
	DefaultTier messages.Tier `yaml:"default_tier,omitempty"`
	// MaxQueued bounds the team's calls waiting for admission, across all
	// dispatchers and pools; more get queue_full at once. Default 10000.
	MaxQueued int `yaml:"max_queued,omitempty"`
	// Pools the team may use, with its quota in each. A list of names gives
	// each the default quota; leaving it out allows every pool, each with
	// the default quota.
	Pools TeamPools `yaml:"pools,omitempty"`
	// Tokens are the hashes ("sha256:<hex>", see HashToken) of the bearer
	// tokens that identify the team at the HTTP gateway. The tokens
	// themselves are never stored.
	Tokens []string `yaml:"tokens,omitempty"`
	// Budget bounds what the team spends per calendar day and month, in
	// tokens and money, across every dispatcher. Nil: no budget.
	Budget *TeamBudget `yaml:"budget,omitempty"`
}

// Quota is a team's share of one pool, as people allocated it.
type Quota struct {
	// Weight is the team's share, relative to the other teams', when the
	// pool is contended within a tier: weights 3 and 1 split it 3:1. Capacity
	// a team leaves idle goes to the others. Default 1.
	Weight float64 `yaml:"weight,omitempty"`
	// GuaranteedRPM and GuaranteedTPM are an absolute share: up to these
	// rates, the team's non-critical calls go before other teams' calls of
	// any non-critical tier. 0: none.
	GuaranteedRPM int64 `yaml:"guaranteed_rpm"`
	GuaranteedTPM int64 `yaml:"guaranteed_tpm"`
	// CapRPM and CapTPM are hard caps: the team never goes above them, even
	// with the pool idle. 0: no cap.
	CapRPM int64 `yaml:"cap_rpm"`
	CapTPM int64 `yaml:"cap_tpm"`
}

// TeamPools maps pool names to a team's quota in each. In YAML it is a map
// of pool names to quotas, or a list of pool names.
type TeamPools map[string]*Quota

// UnmarshalYAML accepts a map of quotas or a list of pool names.
func (p *TeamPools) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		var names []string
		if err := n.Decode(&names); err != nil {
			return err
		}
		*p = TeamPools{}
		for _, name := range names {
			(*p)[name] = nil
		}
		return nil
	}
	if err := knownFieldsOnly(n, reflect.TypeOf(Quota{})); err != nil {
		return err
	}
	var m map[string]*Quota
	if err := n.Decode(&m); err != nil {
		return err
	}
	*p = m
	return nil
}

// Tiers sets how the priority tiers share a contended pool: critical first
// (with a reserve only it may use), then high, standard and batch, each
// lower tier with a minimum share so that nothing starves forever; batch
// calls are deferred while the pool is busy.
type Tiers struct {
	Critical TierPolicy `yaml:"critical"`
	High     TierPolicy `yaml:"high"`
	Standard TierPolicy `yaml:"standard"`
	Batch    TierPolicy `yaml:"batch"`
}

// TierPolicy is one tier's part of a contended pool.
type TierPolicy struct {
	// Reserve (critical only) is the fraction of each deployment's capacity
	// that only critical calls may use. Default 0.
	Reserve float64 `yaml:"reserve"`
	// MinShare (high, standard, batch) is the fraction of a pool's capacity
	// the tier gets even when higher tiers would take it all. Defaults: high
	// 0, standard 0.05, batch 0.
	MinShare float64 `yaml:"min_share,omitempty"`
	// MaxUtilization (batch only): batch calls run while the pool's other
	// traffic leaves them room below this fraction of its capacity, or
	// during OffPeak; otherwise they wait, until their deadline. Default
	// 0.7.
	MaxUtilization float64 `yaml:"max_utilization,omitempty"`
	// OffPeak (batch only) are daily spans of local time, such as "18:00-08:00
	// Europe/Berlin", in which batch calls ignore MaxUtilization.
	OffPeak []string `yaml:"off_peak"`
	// TargetWait is how long a call of the tier may wait for admission
	// and still count as served in time: what sluice plan measures
	// demand against (a call that waited longer was unmet demand).
	// Defaults: critical 1s, high 5s, standard 30s, batch 1h.
	TargetWait time.Duration `yaml:"target_wait,omitempty"`

	offPeak []offPeakSpan
	// minShareWritten says that the YAML wrote 0 for MinShare, so that
	// it holds rather than defaults.
	minShareWritten bool
}

// Policy returns tier's policy.
func (t *Tiers) Policy(tier messages.Tier) *TierPolicy {
	switch tier {
	case messages.TierCritical:
		return &t.Critical
	case messages.TierHigh:
		return &t.High
	case messages.TierStandard:
		return &t.Standard
	default:
		return &t.Batch
	}
}

// AllowsTier reports whether the team may publish on tier.
func (t *Team) AllowsTier(tier messages.Tier) bool {
	if len(t.Tiers) == 0 {
		return tier.Valid()
	}
	for _, x := range t.Tiers {
		if x == tier {
			return true
		}
	}
	return false
}

// AllowsPool reports whether the team may use pool.
func (t *Team) AllowsPool(pool string) bool {
	_, ok := t.Quota(pool)
	return ok
}

// Quota returns the team's quota in pool, and whether it may use it.
func (t *Team) Quota(pool string) (*Quota, bool) {
	if t.Pools == nil {
		return &defaultQuota, true
	}
	q, ok := t.Pools[pool]
	return q, ok
}

// defaultQuota is the quota of a pool a team may use without one: weight
// 1, no guarantee, no cap.
var defaultQuota = Quota{Weight: 1}

// GuaranteedTeams lists, sorted, the teams with a guarantee in pool;
// like TeamNames, built by Validate and shared.
func (c *Config) GuaranteedTeams(pool string) []string {
	if c.guaranteed == nil { // not validated
		return c.guaranteedIn(pool)
	}
	return c.guaranteed[pool]
}

func (c *Config) guaranteedIn(pool string) []string {
	var out []string
	for _, name := range c.TeamNames() {
		if q, ok := c.Teams[name].Quota(pool); ok && q.Guaranteed() {
			out = append(out, name)
		}
	}
	return out
}

// Guaranteed reports whether the quota guarantees requests or tokens.
func (q *Quota) Guaranteed() bool { return q.GuaranteedRPM > 0 || q.GuaranteedTPM > 0 }

// TeamNames lists the teams, sorted. The list is built by Validate (and
// Parse) and shared: callers must not change it.
func (c *Config) TeamNames() []string {
	if len(c.teamNames) != len(c.Teams) {
		return sortedKeys(c.Teams) // not validated
	}
	return c.teamNames
}

func (c *Config) validateTeam(v *validator, name string) {
	t := c.Teams[name]
	field := "teams." + name
	if !messages.ValidToken(name) {
		v.add(field, "team names must be 1 to 64 letters, digits, '-' or '_'")
	}
	if name == Unknown {
		v.add(field, "%q is reserved: metrics and usage count calls of teams the configuration does not know under it", Unknown)
	}
	if t == nil {
		t = &Team{}
		c.Teams[name] = t
	}
	for i, tier := range t.Tiers {
		if !tier.Valid() {
			v.add(fmt.Sprintf("%s.tiers[%d]", field, i), "unknown tier %q; tiers are critical, high, standard, batch", tier)
		}
	}
	def := messages.TierStandard
	if !t.AllowsTier(messages.TierStandard) && len(t.Tiers) > 0 {
		def = lowest(t.Tiers)
	}
	setDefault(v, field+".default_tier", &t.DefaultTier, def)
	if !t.AllowsTier(t.DefaultTier) {
		v.add(field+".default_tier", "tier %q is not one the team may use", t.DefaultTier)
	}
	for i, h := range t.Tokens {
		if !validTokenHash(h) {
			v.add(fmt.Sprintf("%s.tokens[%d]", field, i), "must be sha256:<64 hex digits>, the hash `sluice token` prints, never the token itself")
			continue
		}
		if other, dup := c.tokens[h]; dup && other != name {
			v.add(fmt.Sprintf("%s.tokens[%d]", field, i), "the same token identifies team %s", other)
		}
		c.tokens[h] = name
	}
	setDefault(v, field+".max_queued", &t.MaxQueued, 10000)
	v.positive(field+".max_queued", int64(t.MaxQueued))
	if t.Pools != nil && len(t.Pools) == 0 {
		v.add(field+".pools", "a team needs at least one pool (leave pools out to allow every pool)")
	}
	for _, pool := range sortedKeys(t.Pools) {
		pf := field + ".pools." + pool
		if _, ok := c.Pools[pool]; !ok {
			v.add(pf, "unknown pool %q", pool)
		}
		q := t.Pools[pool]
		if q == nil {
			q = &Quota{}
			t.Pools[pool] = q
		}
		setDefault(v, pf+".weight", &q.Weight, 1)
		if q.Weight <= 0 || q.Weight > 1e6 {
			v.add(pf+".weight", "must be above 0 and at most 1000000")
		}
		for _, n := range []struct {
			name string
			v    int64
		}{{"guaranteed_rpm", q.GuaranteedRPM}, {"guaranteed_tpm", q.GuaranteedTPM}, {"cap_rpm", q.CapRPM}, {"cap_tpm", q.CapTPM}} {
			if n.v < 0 {
				v.add(pf+"."+n.name, "must not be negative")
			}
		}
		if q.CapRPM > 0 && q.CapRPM < q.GuaranteedRPM {
			v.add(pf+".cap_rpm", "cap %d is below the guarantee of %d", q.CapRPM, q.GuaranteedRPM)
		}
		if q.CapTPM > 0 && q.CapTPM < q.GuaranteedTPM {
			v.add(pf+".cap_tpm", "cap %d is below the guarantee of %d", q.CapTPM, q.GuaranteedTPM)
		}
	}
}

// validateGuarantees refuses pools whose teams are guaranteed more than
// the pool has outside the critical reserve.
func (c *Config) validateGuarantees(v *validator) {
	for _, pool := range sortedKeys(c.Pools) {
		p := c.Pools[pool]
		if p == nil {
			continue
		}
		var capRPM, capTPM int64
		for _, d := range p.Deployments {
			if d != nil {
				capRPM += d.RPM
				capTPM += d.TPM
			}
		}
		share := 1 - c.Tiers.Critical.Reserve
		var rpm, tpm int64
		last := ""
		for _, team := range sortedKeys(c.Teams) {
			if q, ok := c.Teams[team].Pools[pool]; ok && q != nil {
				rpm += q.GuaranteedRPM
				tpm += q.GuaranteedTPM
				if q.GuaranteedRPM > 0 || q.GuaranteedTPM > 0 {
					last = team
				}
			}
		}
		if rpm > int64(float64(capRPM)*share) {
			v.add("teams."+last+".pools."+pool+".guaranteed_rpm", "the teams' guarantees in pool %s add up to %d RPM, more than the %d it has outside the critical reserve", pool, rpm, int64(float64(capRPM)*share))
		}
		if tpm > int64(float64(capTPM)*share) {
			v.add("teams."+last+".pools."+pool+".guaranteed_tpm", "the teams' guarantees in pool %s add up to %d TPM, more than the %d it has outside the critical reserve", pool, tpm, int64(float64(capTPM)*share))
		}
	}
}

func (c *Config) validateTiers(v *validator) {
	t := &c.Tiers
	for _, tier := range messages.Tiers {
		p := t.Policy(tier)
		f := "tiers." + string(tier)
		if tier != messages.TierCritical && p.Reserve != 0 {
			v.add(f+".reserve", "only critical has a reserve")
		}
		if tier == messages.TierCritical && p.MinShare != 0 {
			v.add(f+".min_share", "critical goes first; it needs no minimum share")
		}
		if tier != messages.TierBatch && (p.MaxUtilization != 0 || len(p.OffPeak) > 0) {
			v.add(f+".max_utilization", "only batch calls are deferred")
		}
		if p.MinShare < 0 || p.MinShare >= 1 {
			v.add(f+".min_share", "must be at least 0 and below 1")
		}
		v.positiveDuration(f+".target_wait", p.TargetWait)
	}
	if t.Critical.Reserve < 0 || t.Critical.Reserve >= 1 {
		v.add("tiers.critical.reserve", "must be at least 0 and below 1")
	}
	if sum := t.Critical.Reserve + t.High.MinShare + t.Standard.MinShare + t.Batch.MinShare; sum > 1 {
		v.add("tiers", "the critical reserve and the minimum shares add up to %.2f, more than the whole pool", sum)
	}
	if u := t.Batch.MaxUtilization; u <= 0 || u > 1 {
		v.add("tiers.batch.max_utilization", "must be above 0 and at most 1")
	}
	t.Batch.offPeak = nil
	for i, s := range t.Batch.OffPeak {
		w, err := parseOffPeak(s)
		if err != nil {
			v.add(fmt.Sprintf("tiers.batch.off_peak[%d]", i), "%v", err)
			continue
		}
		t.Batch.offPeak = append(t.Batch.offPeak, w)
	}
}

// tierDefaults gives standard its minimum share of 5% when no tier has
// one, unless a 0 was written for it, and batch its max_utilization.
func (c *Config) tierDefaults(v *validator) {
	t := &c.Tiers
	if !t.Standard.minShareWritten && t.Standard.MinShare == 0 && t.Batch.MinShare == 0 && t.High.MinShare == 0 {
		t.Standard.MinShare = 0.05
	}
	setDefault(v, "tiers.batch.max_utilization", &t.Batch.MaxUtilization, 0.7)
	for _, tier := range messages.Tiers {
		setDefault(v, "tiers."+string(tier)+".target_wait", &t.Policy(tier).TargetWait, DefaultTargetWait[tier])
	}
}

// DefaultTargetWait is each tier's target_wait when the configuration
// sets none.
var DefaultTargetWait = map[messages.Tier]time.Duration{
	messages.TierCritical: time.Second,
	messages.TierHigh:     5 * time.Second,
	messages.TierStandard: 30 * time.Second,
	messages.TierBatch:    time.Hour,
}

// lowest is the lowest-priority tier of tiers.
func lowest(tiers []messages.Tier) messages.Tier {
	sorted := append([]messages.Tier(nil), tiers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Rank() < sorted[j].Rank() })
	return sorted[len(sorted)-1]
}

// HashToken is how a gateway token is kept in the configuration.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TeamOfToken returns the team a gateway bearer token identifies.
func (c *Config) TeamOfToken(token string) (string, bool) {
	team, ok := c.tokens[HashToken(token)]
	return team, ok
}

func validTokenHash(h string) bool {
	hexPart, ok := strings.CutPrefix(h, "sha256:")
	if !ok || len(hexPart) != 64 {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil
}
