package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// instrument counts, times and tracks the requests of one route, and
// gives every write a deadline (see Config.WriteTimeout).
func (g *Gateway) instrument(route string, h http.Handler) http.Handler {
	inFlight := g.metrics.InFlight.WithLabelValues(route)
	duration := g.metrics.Duration.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.active.Add(1)
		defer g.active.Done()
		start := time.Now()
		inFlight.Inc()
		// (net/http clears a connection's write deadline after each
		// request, so one left by the previous request on a keep-alive
		// connection cannot cut this one off.)
		rec := &recorder{ResponseWriter: w, rc: http.NewResponseController(w), timeout: g.cfg.WriteTimeout}
		r = r.WithContext(context.WithValue(r.Context(), startKey{}, start))
		h.ServeHTTP(rec, r)
		inFlight.Dec()
		duration.Observe(time.Since(start).Seconds())
		status := rec.status
		if !rec.wrote {
			status = http.StatusOK
			if r.Context().Err() != nil {
				status = statusClientGone
			}
		}
		g.metrics.Requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	})
}

// statusClientGone is the status recorded for a client that went away
// before its answer (nginx's 499); nothing is written to it.
const statusClientGone = 499

// startKey holds a request's arrival time in its context.
type startKey struct{}

func started(r *http.Request) time.Time {
	if t, ok := r.Context().Value(startKey{}).(time.Time); ok {
		return t
	}
	return time.Now()
}

// recorder notes the status written, and sets a write deadline before
// every write, so that a client that stops reading is found out within
// the write timeout however long its answer took to come.
type recorder struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	status  int
	wrote   bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
		_ = r.rc.SetWriteDeadline(time.Now().Add(r.timeout))
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	_ = r.rc.SetWriteDeadline(time.Now().Add(r.timeout))
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// writeJSON writes v as a JSON answer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"error":{"message":"sluice could not encode its answer","type":"api_error","param":null,"code":"internal"}}`)
	}
	writeBody(w, status, data)
}

// writeBody writes a JSON body as it is.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// allowMethod answers 405 unless r uses one of methods.
func allowMethod(w http.ResponseWriter, r *http.Request, d dialect, method string) bool {
	if r.Method == method || (method == http.MethodGet && r.Method == http.MethodHead) {
		return true
	}
	w.Header().Set("Allow", method)
	writeError(w, d, &apiError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
		Message: r.Method + " " + r.URL.Path + " is not served; use " + method})
	return false
}
