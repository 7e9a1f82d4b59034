package budget

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
