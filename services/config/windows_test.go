package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWindowsDefaultAndRoundTrip(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	d, _ := cfg.Deployment("d1")
	if got := d.EnforcedWindows(); !slices.Equal(got, []time.Duration{time.Second, time.Minute}) {
		t.Fatalf("default windows %v, want [1s 1m]", got)
	}
	if cfg.Admission.Jitter != 10*time.Millisecond {
		t.Fatalf("admission.jitter default %v, want 10ms", cfg.Admission.Jitter)
	}
	// An explicit empty list (a token bucket provider) survives being
	// stored and read back, and so does a custom one.
	for _, windows := range []string{"[]", "[100ms, 1m]", "[1m]"} {
		yaml := strings.Replace(minimal, "rpm: 60, tpm: 1000}", "rpm: 600, tpm: 100000, windows: "+windows+"}", 1)
		cfg, err := Parse([]byte(yaml))
		if err != nil {
			t.Fatalf("windows %s: %v", windows, err)
		}
		out, err := cfg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("windows %s: reparse: %v\n%s", windows, err, out)
		}
		a, _ := cfg.Deployment("d1")
		b, _ := back.Deployment("d1")
		if !slices.Equal(a.EnforcedWindows(), b.EnforcedWindows()) || (windows == "[]") != (len(b.EnforcedWindows()) == 0) {
			t.Fatalf("windows %s: read back as %v", windows, b.EnforcedWindows())
		}
	}
}

func TestBadWindowsNameTheField(t *testing.T) {
	for _, tc := range []struct{ windows, field string }{
		{"[0s]", "pools.m.deployments[0].windows[0]"},
		{"[2h]", "pools.m.deployments[0].windows[0]"},
		{"[1s, 1s]", "pools.m.deployments[0].windows[1]"},
		{"[1s, 2s, 3s, 4s, 5s]", "pools.m.deployments[0].windows"},
	} {
		yaml := strings.Replace(minimal, "tpm: 1000}", "tpm: 60, windows: "+tc.windows+"}", 1)
		_, err := Parse([]byte(yaml))
		var ve *ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
			t.Fatalf("windows %s: %v, want a ValidationError", tc.windows, err)
		}
		found := false
		for _, p := range ve.Problems {
			found = found || p.Field == tc.field
		}
		if !found {
			t.Errorf("windows %s: problems %v, want one naming %s", tc.windows, ve.Problems, tc.field)
		}
	}
}

// A token burst holds as written, or is refused naming the field: one
// that leaves no rate in the shortest window (tpm 6,000 holds 100 tokens
// in a second) and a negative one.
func TestTokenBurst(t *testing.T) {
	yaml := strings.Replace(minimal, "rpm: 60, tpm: 1000}", "rpm: 600, tpm: 6000, token_burst: 49}", 1)
	cfg, err := Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := cfg.Deployment("d1"); d.TokenBurst != 49 {
		t.Fatalf("token_burst read as %d, want 49", d.TokenBurst)
	}
	for _, burst := range []string{"100", "-1"} {
		yaml := strings.Replace(minimal, "rpm: 60, tpm: 1000}", "rpm: 600, tpm: 6000, token_burst: "+burst+"}", 1)
		_, err := Parse([]byte(yaml))
		var ve *ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
			t.Fatalf("token_burst %s: %v, want a ValidationError", burst, err)
		}
		found := false
		for _, p := range ve.Problems {
			found = found || p.Field == "pools.m.deployments[0].token_burst"
		}
		if !found {
			t.Errorf("token_burst %s: problems %v, want one naming pools.m.deployments[0].token_burst", burst, ve.Problems)
		}
	}
}
