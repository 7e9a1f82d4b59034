package messages

import (
	"strings"
	"testing"
)

func TestSubjectTail(t *testing.T) {
	for _, s := range []string{"c1", "dot.id", "a.b.c", strings.Repeat("x", 65), strings.Repeat("x", MaxAnswerIDLen), "ünïcødé-✓", "call@host$1", "a/b=c:d"} {
		if !SubjectTail(s) {
			t.Errorf("SubjectTail(%q) = false, want true", s)
		}
	}
	for _, s := range []string{"", "a.*", "*", "a.>", ">", "a*b", "has space", "a\tb", "a\nb", "a\rb", "a\x00b", "a\u00a0b", "a..b", ".a", "a.", ".", "\xff", strings.Repeat("x", MaxAnswerIDLen+1)} {
		if SubjectTail(s) {
			t.Errorf("SubjectTail(%q) = true, want false", s)
		}
	}
}

func TestAnswerID(t *testing.T) {
	derived := DerivedCallID(7)
	for _, tc := range []struct{ body, msgID, want string }{
		{"c1", "c2", "c1"},         // the body's id first
		{"", "c2", "c2"},           // else the header's
		{"", "", derived},          // else derived
		{"dot.id", "c2", "dot.id"}, // a subject, though not a token: the client listens there
		{"", "dot.id", "dot.id"},   // also from the header
		{"has space", "c2", "c2"},  // no subject: the header, if it is a token
		{"has space", "", derived}, // else derived
		{"a.*", "a.>", derived},    // wildcards never make an answer subject
		{"", "has space", derived}, // a header no subject can carry
		{strings.Repeat("x", 300), "", derived},
	} {
		if got := AnswerID(tc.body, tc.msgID, 7); got != tc.want {
			t.Errorf("AnswerID(%q, %q) = %q, want %q", tc.body, tc.msgID, got, tc.want)
		}
	}
	if DerivedCallID(7) != derived || DerivedCallID(8) == derived {
		t.Error("DerivedCallID must be a function of the sequence")
	}
}
