package executor

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sluicehq/sluice/messages"
)

// FuzzBodyJSON turns whatever a provider answered into the body of a
// result: no panic; an empty answer is none; a JSON answer goes as it
// came; anything else (HTML, plain text, truncated JSON, invalid UTF-8)
// becomes a JSON string of valid UTF-8 holding at most the first
// nonJSONExcerpt bytes; and the result carrying it encodes, and decodes
// as clients decode results, to the same body.
func FuzzBodyJSON(f *testing.F) {
	for _, s := range []string{
		`{"id":"chatcmpl-1","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}`,
		`{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`,
		`[{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}]`,
		"<html><body><h1>502 Bad Gateway</h1></body></html>",
		"upstream connect error or disconnect/reset before headers",
		`{"choices":[`, ` "just a string" `, "null", "12", "",
		"\xff\xfe\x00", strings.Repeat("é", 1500), strings.Repeat("x", 2047) + "é",
		"{\"a\":\"\xff\"}", "{\"a\":\"\u2028<&>\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out := bodyJSON(b)
		if len(b) == 0 {
			if out != nil {
				t.Fatalf("an empty answer became %q", out)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("%q became %q, not JSON", b, out)
		}
		if json.Valid(b) {
			if !bytes.Equal(out, b) {
				t.Fatalf("JSON %q became %q", b, out)
			}
		} else {
			var s string
			if err := json.Unmarshal(out, &s); err != nil || !utf8.ValidString(s) || len(out) > 6*nonJSONExcerpt+2 {
				t.Fatalf("%q became %q (%v)", b, out, err)
			}
			if want := string([]rune(string(b[:min(len(b), nonJSONExcerpt)]))); s != want {
				t.Fatalf("%q became %q, want the start of it", b, s)
			}
		}
		res := &messages.Result{ID: "c1", Team: "t", Body: out}
		data, err := json.Marshal(res)
		if err != nil {
			t.Fatalf("a result with body %q does not encode: %v", out, err)
		}
		var back messages.Result
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatalf("a result with body %q does not decode: %v", out, err)
		}
		var want, got any
		if json.Unmarshal(out, &want) != nil || json.Unmarshal(back.Body, &got) != nil || !jsonEqual(want, got) {
			t.Fatalf("body %q came back as %q", out, back.Body)
		}
	})
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
