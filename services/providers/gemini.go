package providers

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Google's APIs (Gemini, Vertex AI, and their OpenAI-compatible endpoints)
// send no rate-limit headers. A 429 says RESOURCE_EXHAUSTED in a google.rpc
// error body, and the wait is a RetryInfo detail in it:
//
//	{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "...",
//	  "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
//	               "retryDelay": "17s"}]}}
//
// Some endpoints wrap that object in a one-element array. Since any
// OpenAI-compatible gateway may pass such a body through, every adapter
// reads it on a 429 that carried no retry-after header.

// maxErrorBody bounds the body searched for error details: a real error
// body is a few kilobytes, and a huge one is not worth decoding to find a
// hint.
const maxErrorBody = 1 << 20

// googleErrorBody is the part of a google.rpc error body sluice reads.
type googleErrorBody struct {
	Error *struct {
		Status  string            `json:"status"`
		Details []json.RawMessage `json:"details"`
	} `json:"error"`
}

// retryInfoDelay returns the retryDelay of a google.rpc.RetryInfo detail in
// body, clamped to [0, MaxWait]; 0 when there is none or it is garbage.
func retryInfoDelay(body []byte) time.Duration {
	var b googleErrorBody
	if !decodeErrorBody(body, &b) || b.Error == nil {
		return 0
	}
	for _, raw := range b.Error.Details {
		var d struct {
			Type       string `json:"@type"`
			RetryDelay string `json:"retryDelay"`
		}
		if json.Unmarshal(raw, &d) != nil || !strings.HasSuffix(d.Type, "google.rpc.RetryInfo") {
			continue
		}
		if w := protoDuration(d.RetryDelay); w > 0 {
			return w
		}
	}
	return 0
}

// protoDuration parses a protobuf Duration in its JSON form: decimal
// seconds with an "s" suffix, such as "17s" or "0.250s".
func protoDuration(s string) time.Duration {
	num, ok := strings.CutSuffix(strings.TrimSpace(s), "s")
	if !ok || num == "" {
		return 0
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0
	}
	return seconds(f)
}

// decodeErrorBody decodes an error body into v, unwrapping the one-element
// array some endpoints send. It reports false for a body that is too large,
// not JSON, or not of v's shape.
func decodeErrorBody(body []byte, v any) bool {
	if len(body) > maxErrorBody {
		return false
	}
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		var arr []json.RawMessage
		if json.Unmarshal(body, &arr) != nil || len(arr) == 0 {
			return false
		}
		body = arr[0]
	}
	return json.Unmarshal(body, v) == nil
}
