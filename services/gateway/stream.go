package gateway

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/messages"
)

// drainWait bounds the wait, once a streamed call's result is in, for the
// events it counts that have not been written yet. They left the executor
// before the result did, so they are normally already here.
const drainWait = 5 * time.Second

// trailers are the x-sluice-* headers of a stream, sent as HTTP trailers
// since the result comes after the events.
var trailers = strings.Join([]string{HeaderDeployment, HeaderRegion, HeaderAttempts, HeaderQueuedMS, HeaderTraceID}, ", ")

// relayer writes one stream to its client.
type relayer struct {
	g       *Gateway
	x       *exchange
	rc      *http.ResponseController
	started bool
	// next is the Sluice-Seq expected next; next-1 events were written.
	next int
	buf  []byte
	// ended is set once the stream's last event was written (see
	// endsStream): the provider has answered in full, so a client that
	// leaves then, before sluice's result, has not canceled anything.
	ended bool
}

// endsStream reports whether a streamed event is its stream's last:
// OpenAI's data: [DONE], Anthropic's message_stop, or a Responses
// stream's terminal event.
func endsStream(data []byte) bool {
	for _, end := range []string{"data: [DONE]", "event: message_stop", "event: response.completed", "event: response.failed", "event: response.incomplete"} {
		if bytes.Contains(data, []byte(end)) {
			return true
		}
	}
	return false
}

// relay writes a streamed call's events to the client as they come, in
// order, then ends the stream as its result says.
func (g *Gateway) relay(x *exchange, resultCh <-chan *messages.Result, s *streamSub) {
	rl := &relayer{g: g, x: x, rc: http.NewResponseController(x.w), next: 1}
	giveUp := time.NewTimer(time.Until(x.giveUp))
	defer giveUp.Stop()
	tick := time.NewTicker(refetchEvery)
	defer tick.Stop()
	var final *messages.Result
	var drain <-chan time.Time
	for {
		if final != nil && rl.next-1 >= final.Chunks {
			rl.finish(final)
			return
		}
		if s.over.Load() {
			// Checked first, so that what is left in the buffer is not
			// written to a client known to be too slow.
			rl.slowClient()
			return
		}
		select {
		case m := <-s.chunks:
			if !rl.chunk(m) {
				return
			}
		case <-s.overflow:
			rl.slowClient()
			return
		case res := <-resultCh:
			if final == nil {
				final = res
				drain = time.After(drainWait)
			}
		case <-drain:
			x.log.Warn("chunks of the stream were lost", "written", rl.next-1, "result_chunks", final.Chunks)
			rl.truncate("lost_chunks", lostChunks)
			return
		case <-x.r.Context().Done():
			if rl.ended {
				// Gone after the last event: the call is over at the
				// provider; its result is still sluice's to store.
				x.log.Debug("the client went away after the stream's last event", "written", rl.next-1)
				return
			}
			x.cancel()
			if rl.started {
				g.metrics.Truncated.WithLabelValues("client_gone").Inc()
			}
			x.log.Debug("the client went away: call canceled", "written", rl.next-1)
			return
		case <-giveUp.C:
			x.cancel()
			if !rl.started {
				g.noResult(x)
				return
			}
			x.log.Warn("the stream outlived the call's deadline: ended, call canceled", "written", rl.next-1)
			rl.truncate("deadline", &apiError{Status: http.StatusGatewayTimeout, Code: string(messages.CodeDeadlineExceeded),
				Message: "the call's deadline passed before the stream ended"})
			return
		case <-tick.C:
			if res := g.refetch(x); res != nil && final == nil {
				final = res
				drain = time.After(drainWait)
			}
		}
	}
}

var lostChunks = &apiError{Status: http.StatusBadGateway, Code: string(messages.CodeInternal),
	Message: "part of the streamed answer was lost on its way through sluice"}

// slowClient ends the stream of a client that fell StreamBuffer events
// behind; the call was canceled as the buffer overflowed.
func (rl *relayer) slowClient() {
	rl.x.log.Warn("the client reads the stream too slowly: stream ended, call canceled", "written", rl.next-1, "buffer", rl.g.cfg.StreamBuffer)
	rl.truncate("slow_client", &apiError{Status: http.StatusBadGateway, Code: string(messages.CodeCanceled),
		Message: "sluice ended the stream: the client read it too slowly"})
}

// chunk writes one event. It returns false when the stream is over: the
// event was out of order, or the client could not take it.
func (rl *relayer) chunk(m *nats.Msg) bool {
	x := rl.x
	seq, err := strconv.Atoi(m.Header.Get(messages.HeaderStreamSeq))
	if err != nil || seq != rl.next {
		x.cancel()
		x.log.Warn("chunks of the stream were lost: stream ended, call canceled", "want_seq", rl.next, "got_seq", m.Header.Get(messages.HeaderStreamSeq))
		rl.truncate("lost_chunks", lostChunks)
		return false
	}
	rl.next++
	if x.rt.endpoint == messages.EndpointResponses && x.responseID == "" {
		// response.created names the response: remembered with the
		// result (see remember).
		if _, data, ok := strings.Cut(string(m.Data), "data: "); ok {
			x.responseID = responseID([]byte(data))
		}
	}
	first := !rl.started
	rl.start()
	if err := rl.write(m.Data); err != nil {
		x.cancel()
		// (A failed write cancels the request's context too: only the
		// error tells a stuck client from one that left.)
		reason := "client_gone"
		if isTimeout(err) {
			reason = "slow_client"
		}
		rl.g.metrics.Truncated.WithLabelValues(reason).Inc()
		x.log.Info("could not write to the client: stream ended, call canceled", "reason", reason, "written", rl.next-2, "err", err)
		return false
	}
	rl.ended = rl.ended || endsStream(m.Data)
	if first {
		rl.g.metrics.FirstChunk.WithLabelValues(x.rt.path).Observe(time.Since(started(x.r)).Seconds())
	}
	return true
}

// start writes the stream's header, once.
func (rl *relayer) start() {
	if rl.started {
		return
	}
	rl.started = true
	h := rl.x.w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	// Proxies such as nginx must not hold events back.
	h.Set("X-Accel-Buffering", "no")
	h.Set("Trailer", trailers)
	rl.x.w.WriteHeader(http.StatusOK)
}

// write writes one event and flushes it.
func (rl *relayer) write(event []byte) error {
	rl.buf = append(append(rl.buf[:0], event...), '\n', '\n')
	if _, err := rl.x.w.Write(rl.buf); err != nil {
		return err
	}
	return rl.rc.Flush()
}

// finish ends the stream as its result says.
func (rl *relayer) finish(res *messages.Result) {
	x := rl.x
	if !rl.started {
		// Nothing was streamed: answer as any call, so that an error
		// before the first event is an HTTP error.
		if res.Error != nil || len(res.Body) > 0 {
			rl.g.answer(x, res)
			return
		}
		rl.start()
	}
	setResultHeaders(x.w.Header(), res)
	traceResult(x, res)
	rl.g.remember(x, res)
	if res.Error != nil {
		x.log.Info("the call failed mid-stream", "code", res.Error.Code, "written", rl.next-1)
		reason := "error"
		if res.Error.Code == messages.CodeDeadlineExceeded {
			// The call's own deadline cut it, as the gateway's would.
			reason = "deadline"
		}
		rl.truncate(reason, fromCallError(res.Error))
		return
	}
	x.log.Debug("stream relayed", "chunks", rl.next-1)
}

// truncate ends a stream early: with an error event in the route's
// dialect once events were written, or an HTTP error before.
func (rl *relayer) truncate(reason string, e *apiError) {
	rl.g.metrics.Truncated.WithLabelValues(reason).Inc()
	if !rl.started {
		writeError(rl.x.w, rl.x.rt.dialect, e)
		return
	}
	_ = rl.write(streamErrorEvent(rl.x.rt.dialect, e))
}

// isTimeout reports whether a write failed on its deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
