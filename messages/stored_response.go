package messages

// StoredResponse is where a stored Responses API response lives: the
// provider keeps it with the key (the deployment) that made it, so a call
// that fetches, deletes or continues it (previous_response_id) must go
// there. The gateways keep one per response they relay in KV bucket
// SLUICE_RESPONSES under StoredResponseKey, so that any gateway can send
// such a call to its deployment.
type StoredResponse struct {
	// Pool is the pool (model) whose deployment made the response.
	Pool string `json:"pool"`
	// Deployment is the id of the deployment that made it.
	Deployment string `json:"deployment"`
}

// StoredResponseKey is the SLUICE_RESPONSES key of team's response id:
// "<team>.<id>". Team names are subject tokens and response ids letters,
// digits, '-' and '_', so every key is a valid KV key.
func StoredResponseKey(team, id string) string { return team + "." + id }
