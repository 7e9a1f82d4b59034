package concurrency

import (
	"testing"
	"time"
)

func TestFairShare(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	live := now.Add(time.Minute).UnixNano()
	dead := now.Add(-time.Minute).UnixNano()
	for _, c := range []struct {
		name      string
		holders   map[string]block
		demand    int
		max       int
		share     int
		contested bool
	}{
		{"alone", nil, 7, 5, 5, false},
		{"nobody waits", map[string]block{"b": {n: 2, exp: live, want: 2}}, 7, 5, 5, false},
		{"smallest first", map[string]block{"a": {n: 0, exp: live, want: 1}, "c": {n: 4, exp: live, want: 4}}, 4, 5, 2, true},
		{"the small want is met", map[string]block{"a": {n: 0, exp: live, want: 4}, "c": {n: 4, exp: live, want: 4}}, 1, 5, 1, true},
		{"even split rounds up first", map[string]block{"a": {n: 0, exp: live, want: 9}, "c": {n: 3, exp: live, want: 9}}, 9, 5, 2, true},
		{"ties go by holder id", map[string]block{"a": {n: 0, exp: live, want: 9}, "a1": {n: 3, exp: live, want: 9}}, 9, 5, 1, true},
		{"dead holders do not count", map[string]block{"x": {n: 0, exp: dead, want: 9}}, 9, 5, 5, false},
	} {
		st := state{holders: c.holders}
		share, contested := st.fairShare("b", c.demand, c.max, now, 0)
		if share != c.share || contested != c.contested {
			t.Errorf("%s: fairShare = %d, %v; want %d, %v", c.name, share, contested, c.share, c.contested)
		}
	}
	// Every holder computes the same shares, adding up to the maximum.
	st := state{holders: map[string]block{"a": {n: 1, exp: live, want: 9}, "b": {n: 1, exp: live, want: 9}, "c": {n: 3, exp: live, want: 9}}}
	sum := 0
	for _, h := range []string{"a", "b", "c"} {
		share, _ := st.fairShare(h, 9, 5, now, 0)
		sum += share
	}
	if sum != 5 {
		t.Errorf("the shares of three equal wants add up to %d, want 5", sum)
	}
}

func TestStateRoundTrip(t *testing.T) {
	st := state{holders: map[string]block{"d1": {n: 5, exp: 1735689600000000000, want: 6}, "d2": {n: 0, exp: 1, want: 1}}}
	got, err := decodeState(encodeState(st))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.holders) != 2 || got.holders["d1"] != st.holders["d1"] || got.holders["d2"] != st.holders["d2"] {
		t.Fatalf("round trip gave %+v, want %+v", got, st)
	}
	if _, err := decodeState([]byte(`{"holders":{"d1":{"n":1,"exp":2}}}`)); err != nil {
		t.Fatalf("a block without want: %v", err)
	}
}
