package messages_test

import (
	"strings"
	"testing"

	"github.com/sluicehq/sluice/messages"
)

// ParseCallSubject reads the subject a client published on, the only
// place a call's team and tier come from: it never panics, refuses what
// is not sluice.call.<team>.<tier> or sluice.retry.<team>.<tier> with an
// error, and what CheckCallAddress accepts makes a subject that parses
// back to the same team and tier, and a result subject of exactly four
// tokens. A valid token never holds a character that subjects or KV keys
// give a meaning to.
func FuzzParseCallSubject(f *testing.F) {
	for _, seed := range []struct{ subject, id string }{
		{"sluice.call.search.standard", "c1"},
		{"sluice.retry.search.critical", ""},
		{"sluice.call.demo.batch", "0b6c2f52-6a44-4f8e-9d6f-0d4c1a2b3c4d"},
		{"sluice.call.junk1.tier1", "dot.id"},
		{"sluice.call.t@m.standard", "x y"},
		{"sluice.call.demo.standard.extra", "*"},
		{"sluice.call.demo", ">"},
		{"sluice.result.demo.c1", strings.Repeat("a", 65)},
		{"sluice..demo.standard", ""},
		{"SLUICE.call.demo.standard", "ünïcode"},
		{"sluice.call.ünïcode.high", "\x00"},
		{"sluice.call." + strings.Repeat("t", 65) + ".high", strings.Repeat("a", 64)},
		{"", ""},
	} {
		f.Add(seed.subject, seed.id)
	}
	f.Fuzz(func(t *testing.T, subject, id string) {
		kind, team, tier, err := messages.ParseCallSubject(subject)
		if err != nil {
			if kind != messages.KindUnknown || err.Error() == "" {
				t.Fatalf("refused %q with kind %v and error %q", subject, kind, err)
			}
		} else {
			if kind != messages.KindCall && kind != messages.KindRetry {
				t.Fatalf("%q parsed as kind %v", subject, kind)
			}
			if strings.Contains(team, ".") || strings.Contains(string(tier), ".") {
				t.Fatalf("%q parsed to team %q tier %q", subject, team, tier)
			}
		}
		for _, s := range []string{team, id, string(tier), subject} {
			if messages.ValidToken(s) && strings.ContainsAny(s, ".*> \t\r\n/\\=@:") {
				t.Fatalf("ValidToken(%q) though it holds a special character", s)
			}
		}
		if messages.CheckCallAddress(team, tier, id) != nil {
			return
		}
		call := messages.CallSubject(team, tier)
		k, team2, tier2, err := messages.ParseCallSubject(call)
		if err != nil || k != messages.KindCall || team2 != team || tier2 != tier {
			t.Fatalf("CallSubject(%q, %q) = %q parses to %v %q %q %v", team, tier, call, k, team2, tier2, err)
		}
		k, team2, tier2, err = messages.ParseCallSubject(messages.RetrySubject(team, tier))
		if err != nil || k != messages.KindRetry || team2 != team || tier2 != tier {
			t.Fatalf("RetrySubject(%q, %q) parses to %v %q %q %v", team, tier, k, team2, tier2, err)
		}
		if id != "" {
			for _, s := range []string{messages.ResultSubject(team, id), messages.AnswerSubject(team, id), messages.CancelSubject(team, id), messages.StreamSubject(team, id)} {
				if parts := strings.Split(s, "."); len(parts) != 4 || parts[2] != team || parts[3] != id {
					t.Fatalf("subject %q for team %q and id %q", s, team, id)
				}
			}
		}
	})
}
