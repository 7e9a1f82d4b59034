package config

import (
	"testing"

	"github.com/sluicehq/sluice/messages"
)

// Labels keep the names the configuration knows and give every other one
// the same label; a missing configuration knows nothing.
func TestLabelsAreConfiguredNamesOrUnknown(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ got, want string }{
		{c.TeamLabel("t"), "t"},
		{c.TeamLabel("t@m"), Unknown},
		{c.TeamLabel(""), Unknown},
		{c.PoolLabel("m"), "m"},
		{c.PoolLabel("gpt-4.1"), Unknown},
		{c.PoolLabel(""), Unknown},
		{TierLabel(messages.TierBatch), "batch"},
		{TierLabel("tier7"), Unknown},
		{(*Config)(nil).TeamLabel("t"), Unknown},
		{(*Config)(nil).PoolLabel("m"), Unknown},
	} {
		if tc.got != tc.want {
			t.Errorf("label %q, want %q", tc.got, tc.want)
		}
	}
}
