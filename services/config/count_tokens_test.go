package config

import (
	"errors"
	"strings"
	"testing"
)

// A pool's count_tokens is "provider" (the default), "estimate", or
// refused naming the field.
func TestPoolCountTokens(t *testing.T) {
	for value, estimates := range map[string]bool{"": false, "provider": false, "estimate": true} {
		yaml := minimal
		if value != "" {
			yaml = strings.Replace(minimal, "  m:\n", "  m:\n    count_tokens: "+value+"\n", 1)
		}
		cfg, err := Parse([]byte(yaml))
		if err != nil {
			t.Fatalf("count_tokens %q: %v", value, err)
		}
		if got := cfg.Pools["m"].EstimatesTokenCounts(); got != estimates {
			t.Errorf("count_tokens %q: estimates %v, want %v", value, got, estimates)
		}
	}
	_, err := Parse([]byte(strings.Replace(minimal, "  m:\n", "  m:\n    count_tokens: guess\n", 1)))
	var ve *ValidationError
	if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("count_tokens guess: %v, want a ValidationError", err)
	}
	if len(ve.Problems) != 1 || ve.Problems[0].Field != "pools.m.count_tokens" {
		t.Errorf("count_tokens guess: problems %v, want one naming pools.m.count_tokens", ve.Problems)
	}
}
