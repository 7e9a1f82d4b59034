package messages

import (
	"bytes"
	"encoding/json"
)

// envelopeFields are the call envelope's fields, spelt exactly.
var envelopeFields = map[string]bool{
	"id": true, "model": true, "endpoint": true, "body": true, "deadline": true,
	"timeout_ms": true, "regions": true, "prefer_regions": true, "deployment": true, "metadata": true,
}

// checkFieldNames refuses a call envelope that names a field twice or in
// another case. encoding/json takes the last of duplicates and matches
// names regardless of case, so {"id":"a","ID":"b"} would be answered as
// call b: another reader of the same bytes (a client's logs, a proxy)
// would see call a. A call means one thing or is refused. data must be
// a JSON object (checked by the decoder first).
func checkFieldNames(data []byte) *Error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		name, _ := tok.(string)
		switch {
		case !envelopeFields[name]:
			return FieldError(name, "is not a field of a call (names are lower case: %s)", "id, model, endpoint, body, deadline, timeout_ms, regions, prefer_regions, deployment, metadata")
		case seen[name]:
			return FieldError(name, "appears twice")
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}
