package fakeprovider

import (
	"encoding/base64"
	"encoding/binary"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"net/http"
)

// handleEmbeddings serves POST /v1/embeddings. Embeddings are charged
// their prompt tokens only: there is no completion.
func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	s.serveEmbeddings(w, r, openAIDialect{}, "")
}

// serveEmbeddings serves an embeddings request in dialect d; urlModel is
// as for serveChat.
func (s *Server) serveEmbeddings(w http.ResponseWriter, r *http.Request, d dialect, urlModel string) {
	c, body, ok := s.begin(w, r, d)
	if !ok {
		return
	}
	req, bad := parseEmbedding(body, urlModel)
	c.model = req.model
	if bad != nil {
		c.fail(bad, outInvalid)
		return
	}
	if !c.checkModel(req.model) {
		return
	}
	prompt := embeddingTokens(req.inputs)
	if !c.admit(prompt) {
		return
	}
	if !c.proceed() {
		return
	}
	dims := req.dimensions
	if dims == 0 {
		dims = s.cfg.Dimensions
	}
	resp := embeddingList{Object: "list", Model: req.model,
		Usage: embeddingUsage{PromptTokens: prompt, TotalTokens: prompt}}
	for i, in := range req.inputs {
		vec := embed(in, dims)
		d := embeddingDatum{Object: "embedding", Index: i, Embedding: vec}
		if req.base64 {
			d.Embedding = encodeFloats(vec)
		}
		resp.Data = append(resp.Data, d)
	}
	c.succeed(resp, usage{PromptTokens: prompt, TotalTokens: prompt})
}

// embed returns a unit vector that depends only on the input, so that
// equal inputs embed equally across calls and runs, and different inputs
// almost surely differ.
func embed(in embeddingInput, dims int) []float32 {
	h := fnv.New64a()
	if in.isText {
		h.Write([]byte(in.text))
	} else {
		var b [8]byte
		for _, id := range in.ids {
			binary.LittleEndian.PutUint64(b[:], uint64(id))
			h.Write(b[:])
		}
	}
	rng := rand.New(rand.NewPCG(h.Sum64(), uint64(dims)))
	vec := make([]float32, dims)
	var norm float64
	for i := range vec {
		x := rng.Float64()*2 - 1
		vec[i] = float32(x)
		norm += x * x
	}
	if norm = math.Sqrt(norm); norm > 0 {
		for i := range vec {
			vec[i] = float32(float64(vec[i]) / norm)
		}
	}
	return vec
}

// encodeFloats is OpenAI's encoding_format "base64": the little-endian
// float32s, base64-encoded.
func encodeFloats(vec []float32) string {
	b := make([]byte, 4*len(vec))
	for i, f := range vec {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(b)
}
