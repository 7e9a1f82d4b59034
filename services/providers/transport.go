package providers

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
)

// MaxResponseBytes bounds how much of a provider answer is read: a
// provider (or whatever answers in its place) that sends more is cut off.
// Nothing in a truncated body is read (no usage, no error details), and
// the executor judges it as not JSON.
const MaxResponseBytes = 32 << 20

// answer is an HTTP answer read to the end (or to MaxResponseBytes).
type answer struct {
	status    int
	header    http.Header
	body      []byte
	truncated bool // the provider sent more than MaxResponseBytes
}

// read applies a dialect's body reader to a, unless a was truncated.
func (a answer) read(readBody func([]byte) verdict) verdict {
	if a.truncated {
		return verdict{}
	}
	return readBody(a.body)
}

// post sends body to url with the dialect's headers and reads the answer.
// Header values are set as given: callers put the secret in exactly one of
// them.
func post(ctx context.Context, client *http.Client, url string, header http.Header, body []byte) (answer, error) {
	resp, err := send(ctx, client, url, header, body)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	return readAnswer(resp)
}

// send sends body to url with header and returns the answer unread.
func send(ctx context.Context, client *http.Client, url string, header http.Header, body []byte) (*http.Response, error) {
	return sendMethod(ctx, client, http.MethodPost, url, header, body)
}

// fetch sends a request without a body (GET, DELETE) and reads the
// answer.
func fetch(ctx context.Context, client *http.Client, method, url string, header http.Header) (answer, error) {
	header = header.Clone()
	header.Del("Content-Type")
	resp, err := sendMethod(ctx, client, method, url, header, nil)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	return readAnswer(resp)
}

// sendMethod sends a request and returns the answer unread.
func sendMethod(ctx context.Context, client *http.Client, method, url string, header http.Header, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	hreq, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		// url.Error would quote the URL, which holds no secret; the
		// headers are never part of the message.
		return nil, fmt.Errorf("providers: build request: %w", err)
	}
	for k, vs := range header {
		hreq.Header[k] = vs
	}
	if client == nil {
		client = http.DefaultClient
	}
	return client.Do(hreq)
}

// readAnswer reads an answer to the end, or to MaxResponseBytes.
func readAnswer(resp *http.Response) (answer, error) {
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return answer{}, fmt.Errorf("providers: read answer (status %d): %w", resp.StatusCode, err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: data}
	if len(data) > MaxResponseBytes {
		a.body, a.truncated = data[:MaxResponseBytes], true
	}
	return a, nil
}
