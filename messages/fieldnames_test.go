package messages

import "testing"

// A field named twice, or in another case, would make the call mean
// something else to another reader of the same bytes: refused.
func TestDecodeCallRefusesAmbiguousFieldNames(t *testing.T) {
	body := `"body":{"messages":[]}`
	for _, tc := range []struct{ data, field string }{
		{`{"id":"a","id":"b","model":"m",` + body + `}`, "id"},
		{`{"id":"a","model":"m","model":"n",` + body + `}`, "model"},
		{`{"id":"a","ID":"b","model":"m",` + body + `}`, "ID"},
		{`{"id":"a","Model":"m",` + body + `}`, "Model"},
	} {
		_, err := DecodeCall([]byte(tc.data))
		if err == nil || err.Code != CodeInvalidRequest || err.Field != tc.field {
			t.Errorf("%s: got %+v, want invalid_request naming %s", tc.data, err, tc.field)
		}
	}
	if _, err := DecodeCall([]byte(`{"id":"a","model":"m",` + body + `,"metadata":{"k":"v","K":"w"}}`)); err != nil {
		t.Errorf("names inside metadata and body are the client's: %+v", err)
	}
}
