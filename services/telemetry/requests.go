package telemetry

import "github.com/prometheus/client_golang/prometheus"

// Requests are the metrics of the request-reply endpoint
// (sluice.request.<team>.<tier>, services/microsvc). Several instances in
// one process share one set.
type Requests struct {
	// Answered counts replies by outcome: "ok" or the error code of the
	// result replied (refusals before submission included).
	Answered *prometheus.CounterVec
	// InFlight is the number of requests whose call was submitted and
	// whose result is awaited.
	InFlight prometheus.Gauge
}

// NewRequests creates the request endpoint's metrics and registers them
// on reg (nil: a private registry nobody scrapes).
func NewRequests(reg prometheus.Registerer) *Requests {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	return &Requests{
		Answered: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_requests_total", Help: "Requests on sluice.request.<team>.<tier> answered, by outcome (ok or the error code replied).",
		}, []string{"outcome"})),
		InFlight: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_requests_in_flight", Help: "Requests on sluice.request.<team>.<tier> whose result is awaited.",
		})),
	}
}
