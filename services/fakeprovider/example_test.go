package fakeprovider_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/sluicehq/sluice/services/fakeprovider"
)

func Example() {
	fake, err := fakeprovider.New(fakeprovider.Config{
		Keys: map[string]fakeprovider.KeyConfig{"sk-test": {RPM: 1, TPM: 60_000}},
	})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	defer fake.Close()

	call := func() *http.Response {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi!"}],"max_tokens":8}`))
		req.Header.Set("Authorization", "Bearer sk-test")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		return resp
	}

	// 1 RPM: one request now, the next a minute later.
	resp := call()
	var completion struct {
		Usage struct {
			TotalTokens int `json:"total_tokens"`
		} `json:"usage"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&completion)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, completion.Usage.TotalTokens, resp.Header.Get("x-ratelimit-remaining-requests"))

	resp = call()
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("retry-after") != "")

	st := fake.Stats().Keys["sk-test"]
	fmt.Println(st.Served, st.Refused())
	// Output:
	// 200 15 0
	// 429 true
	// 1 1
}
