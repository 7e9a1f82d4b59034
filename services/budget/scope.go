package budget

import "strings"

// Scope is what a budget bounds: a team in all its pools (Pool ""), or
// a team in one pool.
type Scope struct {
	Team string `json:"team"`
	Pool string `json:"pool,omitempty"`
}

// Key is the scope's key in SLUICE_BUDGET: team.<team>, or
// pool.<team>.<pool>. Team names are subject tokens (no '.'), and pool
// names keep to the characters of KV keys, so keys do not collide.
func (s Scope) Key() string {
	if s.Pool == "" {
		return "team." + s.Team
	}
	return "pool." + s.Team + "." + s.Pool
}

func (s Scope) String() string {
	if s.Pool == "" {
		return "team " + s.Team
	}
	return "team " + s.Team + " in pool " + s.Pool
}

// ScopeOfKey is the scope whose key (Scope.Key) is key, and false for a
// key that is no scope's.
func ScopeOfKey(key string) (Scope, bool) {
	if team, ok := strings.CutPrefix(key, "team."); ok && team != "" && !strings.Contains(team, ".") {
		return Scope{Team: team}, true
	}
	if rest, ok := strings.CutPrefix(key, "pool."); ok {
		team, pool, ok := strings.Cut(rest, ".")
		if ok && team != "" && pool != "" {
			return Scope{Team: team, Pool: pool}, true
		}
	}
	return Scope{}, false
}
