package dispatcher

import (
	"strings"
	"testing"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/tokens"
)

func TestNeverFits(t *testing.T) {
	us := &config.Deployment{ID: "us-1", Region: "us-east", TPM: 2000}
	us2 := &config.Deployment{ID: "us-2", Region: "us-east", TPM: 2000}
	eu := &config.Deployment{ID: "eu-1", Region: "eu-west", TPM: 6000}
	unlimited := &config.Deployment{ID: "any-1", Region: "eu-west"}
	est := func(prompt, completion int64) tokens.Estimate {
		return tokens.Estimate{Prompt: prompt, Completion: completion}
	}
	for _, tc := range []struct {
		name    string
		cands   []*config.Deployment
		regions []string
		est     tokens.Estimate
		want    []string // in the message; nil: no refusal
	}{
		{"fits the largest", []*config.Deployment{us, eu}, nil, est(9, 3000), nil},
		{"exactly a deployment's tpm", []*config.Deployment{us, eu}, nil, est(1000, 5000), nil},
		{"one token over every tpm", []*config.Deployment{us, eu}, nil, est(1001, 5000), []string{"6001 tokens", "1001 of prompt", "5000 it may generate", `pool "m"`, "6000 tokens per minute", "tpm of eu-1"}},
		{"over the regions it may use", []*config.Deployment{us, us2}, []string{"us-east"}, est(9, 3000), []string{"3009 tokens", "in regions us-east", "the most is 2000", "tpm of us-1, us-2"}},
		{"a deployment without a tpm admits anything", []*config.Deployment{us, unlimited}, nil, est(9, 1e9), nil},
		{"no deployments is another refusal", nil, nil, est(9, 1e9), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := neverFits("m", tc.cands, tc.regions, tc.est.Total(), estimated(tc.est))
			if tc.want == nil {
				if e != nil {
					t.Fatalf("refused: %v", e)
				}
				return
			}
			if e == nil || e.Code != messages.CodeInvalidRequest || e.Field != "body" {
				t.Fatalf("want invalid_request on body, got %+v", e)
			}
			for _, w := range tc.want {
				if !strings.Contains(e.Message, w) {
					t.Errorf("message %q lacks %q", e.Message, w)
				}
			}
		})
	}
}

// Admission tries only the deployments whose tpm holds the call.
func TestAdmitting(t *testing.T) {
	us := &config.Deployment{ID: "us-1", TPM: 2000}
	eu := &config.Deployment{ID: "eu-1", TPM: 6000}
	unbounded := &config.Deployment{ID: "any-1"}
	ids := func(deps []*config.Deployment) (out []string) {
		for _, d := range deps {
			out = append(out, d.ID)
		}
		return out
	}
	for _, tc := range []struct {
		tokens float64
		want   string
	}{
		{2000, "us-1 eu-1 any-1"},
		{2001, "eu-1 any-1"},
		{6001, "any-1"},
	} {
		if got := strings.Join(ids(admitting([]*config.Deployment{us, eu, unbounded}, tc.tokens)), " "); got != tc.want {
			t.Errorf("%v tokens: %q, want %q", tc.tokens, got, tc.want)
		}
	}
	if got := admitting([]*config.Deployment{us, eu}, 7000); len(got) != 0 {
		t.Errorf("7000 tokens: %v", ids(got))
	}
	if e := neverFits("m", []*config.Deployment{us}, nil, 3000, ""); e == nil || strings.Contains(e.Message, "()") || !strings.Contains(e.Message, "reserves 3000 tokens, more") {
		t.Errorf("without a breakdown: %+v", e)
	}
}
