package telemetry

import "github.com/prometheus/client_golang/prometheus"

// Gateway are the HTTP gateway's metrics. Like Metrics, several gateways
// (or a gateway and other services) in one process share one set.
//
// Labels hold routes (the gateway's own paths, or "other"), HTTP status
// codes and reasons: never a token, a team's secret or a request body.
type Gateway struct {
	// Requests counts answered HTTP requests by route and status code;
	// "499" is a client that went away before its answer.
	Requests *prometheus.CounterVec
	// Duration observes how long requests took, from arrival to the end
	// of the answer (the last chunk of a stream), by route.
	Duration *prometheus.HistogramVec
	// InFlight is the number of requests being served, by route.
	InFlight *prometheus.GaugeVec
	// FirstChunk observes, for streamed answers, the time from the
	// request's arrival to its first chunk being written, by route.
	FirstChunk *prometheus.HistogramVec
	// Truncated counts streams the gateway ended before their end, by
	// reason: lost_chunks (a gap in Sluice-Seq), slow_client (the client
	// read too slowly), client_gone (the client went away), deadline (the
	// call's deadline passed mid-stream), error (the call failed
	// mid-stream otherwise).
	Truncated *prometheus.CounterVec
}

// NewGateway creates the gateway's metrics and registers them on reg
// (nil: a private registry nobody scrapes).
func NewGateway(reg prometheus.Registerer) *Gateway {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	return &Gateway{
		Requests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_gateway_requests_total", Help: "HTTP requests the gateway answered, by route and status (499: the client went away).",
		}, []string{"route", "status"})),
		Duration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_gateway_request_duration_seconds", Help: "HTTP request duration at the gateway, to the end of the answer.", Buckets: latencyBuckets,
		}, []string{"route"})),
		InFlight: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_gateway_in_flight", Help: "HTTP requests the gateway is serving.",
		}, []string{"route"})),
		FirstChunk: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_gateway_first_chunk_seconds", Help: "Time from a streamed request's arrival to its first chunk.", Buckets: latencyBuckets,
		}, []string{"route"})),
		Truncated: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_gateway_streams_truncated_total", Help: "Streams the gateway ended early, by reason (lost_chunks, slow_client, client_gone, deadline, error).",
		}, []string{"reason"})),
	}
}
