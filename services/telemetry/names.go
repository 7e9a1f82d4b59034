package telemetry

import (
	"regexp"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// fqName finds a metric's name in its description.
var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Names lists the name of every metric sluice registers (New's and
// NewGateway's and NewRequests'), sorted: what dashboards and alert rules may refer to.
// Histograms also expose <name>_bucket, <name>_sum and <name>_count.
func Names() []string {
	reg := prometheus.NewRegistry()
	New(reg)
	NewGateway(reg)
	NewRequests(reg)
	descs := make(chan *prometheus.Desc, 256)
	go func() {
		reg.Describe(descs)
		close(descs)
	}()
	var names []string
	for d := range descs {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			names = append(names, m[1])
		}
	}
	sort.Strings(names)
	return names
}
