package test

// The PromQL half of the deploy/ observability checks: what sluice
// registers (telemetry.New and telemetry.NewGateway), and a checker that
// parses an expression with Prometheus's own parser and holds every metric,
// label and label value it names against that registry. A metric or label
// that does not exist makes a panel empty or an alert silent, with no error
// anywhere: this is the only place such a mistake shows.

import (
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/telemetry"
)

// obsMetric is what the checks know of a metric.
type obsMetric struct {
	kind   string   // counter, gauge or histogram
	labels []string // its own; Prometheus adds job and instance
}

// obsForeign are the metrics not of sluice that expressions may use.
var obsForeign = map[string]obsMetric{
	"up": {kind: "gauge"}, // Prometheus's own, per scrape target
}

// obsRegistry reads the collectors of telemetry.Metrics,
// telemetry.Gateway and telemetry.Requests: their names and labels from their descriptions, their
// kind from their Go type. It fails when that differs from
// telemetry.Names(), so a collector kept elsewhere cannot go unchecked.
var obsRegistry = sync.OnceValues(func() (map[string]obsMetric, error) {
	desc := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	found := map[string]obsMetric{}
	for _, set := range []any{telemetry.New(nil), telemetry.NewGateway(nil), telemetry.NewRequests(nil)} {
		v := reflect.ValueOf(set).Elem()
		for i := range v.NumField() {
			field := v.Type().String() + "." + v.Type().Field(i).Name
			var kind string
			switch v.Field(i).Interface().(type) {
			case *prometheus.GaugeVec, prometheus.Gauge: // before Counter: a Gauge has Inc and Add too
				kind = "gauge"
			case *prometheus.CounterVec, prometheus.Counter:
				kind = "counter"
			case *prometheus.HistogramVec, prometheus.Histogram:
				kind = "histogram"
			default:
				return nil, fmt.Errorf("%s is a %s: teach this test its series", field, v.Field(i).Type())
			}
			descs := make(chan *prometheus.Desc, 4)
			go func() {
				v.Field(i).Interface().(prometheus.Collector).Describe(descs)
				close(descs)
			}()
			for d := range descs {
				m := desc.FindStringSubmatch(d.String())
				if m == nil {
					return nil, fmt.Errorf("%s: cannot read %s", field, d)
				}
				found[m[1]] = obsMetric{kind: kind, labels: strings.FieldsFunc(m[2], func(r rune) bool { return r == ',' })}
			}
		}
	}
	if got, names := slices.Sorted(maps.Keys(found)), telemetry.Names(); !slices.Equal(got, names) {
		return nil, fmt.Errorf("telemetry.Names() %q differs from the collectors of telemetry.Metrics and Gateway %q", names, got)
	}
	return found, nil
})

// obsValues are the values sluice gives some labels (by label, or by
// metric/label), so that a matcher on a misspelled value, which would
// match nothing and keep an alert silent, is caught.
func obsValues() map[string][]string {
	outcomes := []string{"ok"}
	for _, c := range messages.Codes {
		outcomes = append(outcomes, string(c))
	}
	var tiers []string
	for _, t := range messages.Tiers {
		tiers = append(tiers, string(t))
	}
	return map[string][]string{
		"outcome": outcomes,
		"tier":    tiers,
		// services/dispatcher (deploymentStates, circuitState.String, reportDeployments)
		"sluice_deployment_state/state":          {"ok", "cooling", "disabled", "circuit_open", "circuit_half_open"},
		"sluice_circuit_transitions_total/state": {"closed", "open", "half_open"},
		"sluice_circuit_transitions_total/scope": {"deployment", "region"},
		"dimension":                              {"requests", "tokens"},
		"kind":                                   {"op", "conflict"},
	}
}

// Grafana variables: ${name}, ${name:format}, $name, [[name]]. "$1" in a
// label_replace is none.
var obsGrafanaVar = regexp.MustCompile(`\$\{([A-Za-z_]\w*)(?::\w+)?\}|\$([A-Za-z_]\w*)|\[\[([A-Za-z_]\w*)\]\]`)

// obsGrafanaDurations are Grafana's built-in variables that stand for a
// range; any duration parses the same.
var obsGrafanaDurations = map[string]string{"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}

// obsAll is what a dashboard variable becomes before parsing: the
// variables are multi-value with "All" (allValue .*), so Grafana puts a
// regex there.
const obsAll = ".*"

// obsExpandGrafana replaces Grafana's variables in expr so that it parses
// as PromQL, and lists their names.
func obsExpandGrafana(expr string) (string, []string) {
	var vars []string
	out := obsGrafanaVar.ReplaceAllStringFunc(expr, func(s string) string {
		m := obsGrafanaVar.FindStringSubmatch(s)
		name := m[1] + m[2] + m[3]
		vars = append(vars, name)
		if d, ok := obsGrafanaDurations[name]; ok {
			return d
		}
		return obsAll
	})
	return out, vars
}

// obsLabels is the set of label names series have; nil where unknown (an
// unknown metric, already reported), so that one mistake is reported once.
type obsLabels map[string]bool

func obsLabelSet(names ...string) obsLabels {
	s := obsLabels{}
	for _, n := range names {
		s[n] = true
	}
	return s
}

func (s obsLabels) without(names ...string) obsLabels {
	if s == nil {
		return nil
	}
	out := obsLabels{}
	for n := range s {
		if !slices.Contains(names, n) {
			out[n] = true
		}
	}
	return out
}

func (s obsLabels) union(o obsLabels) obsLabels {
	if s == nil || o == nil {
		return nil
	}
	out := s.without()
	for n := range o {
		out[n] = true
	}
	return out
}

func (s obsLabels) String() string {
	return fmt.Sprint(slices.Sorted(maps.Keys(s)))
}

// obsChecker checks PromQL expressions against sluice's registry and the
// scrape jobs of prometheus.yml, and remembers which metrics they used.
type obsChecker struct {
	metrics map[string]obsMetric
	values  map[string][]string
	// From the real prometheus.yml and dashboard, for the checks of the
	// files that must agree with them.
	jobs           []string
	scrapeInterval string
	dashboardDS    any // the data source uid the dashboard defaults to
}

// obsExpr is what one expression refers to.
type obsExpr struct {
	metrics []string        // metrics (histograms by their base name) it selects
	vars    []string        // Grafana variables in it
	labels  obsLabels       // labels of its result
	ranges  []time.Duration // of its range selectors
}

// series resolves a series name to its metric, kind and labels:
// sluice_x_bucket is histogram sluice_x with "le".
func (c *obsChecker) series(name string) (string, obsMetric, error) {
	if m, ok := obsForeign[name]; ok {
		return name, m, nil
	}
	if m, ok := c.metrics[name]; ok {
		if m.kind == "histogram" {
			return "", m, fmt.Errorf("%s is a histogram: its series are %[1]s_bucket, %[1]s_sum and %[1]s_count", name)
		}
		return name, m, nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && c.metrics[base].kind == "histogram" {
			m := c.metrics[base]
			m.kind = "counter" // each series of a histogram counts up
			if suffix == "_bucket" {
				m.labels = append(slices.Clone(m.labels), "le")
			}
			return base, m, nil
		}
	}
	return "", obsMetric{}, fmt.Errorf("%s is not in sluice's registry (telemetry.Names()) nor obsForeign", name)
}

// check parses expr (Grafana's variables filled in) and returns what it
// refers to, and every problem found.
func (c *obsChecker) check(expr string) (obsExpr, []string) {
	var out obsExpr
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	promql, vars := obsExpandGrafana(expr)
	out.vars = vars
	root, err := parser.NewParser(parser.Options{}).ParseExpr(promql)
	if err != nil {
		return out, []string{fmt.Sprintf("does not parse: %v", err)}
	}
	parser.Inspect(root, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			base, m, err := c.series(n.Name)
			if err != nil {
				bad("%v", err)
				return nil
			}
			out.metrics = append(out.metrics, base)
			for _, lm := range n.LabelMatchers {
				if lm.Name != model.MetricNameLabel {
					c.checkMatcher(base, m, lm, bad)
				}
			}
		case *parser.MatrixSelector:
			out.ranges = append(out.ranges, n.Range)
		case *parser.AggregateExpr:
			if in := c.labels(n.Expr); in != nil {
				for _, l := range n.Grouping {
					if !in[l] {
						bad("%s by/without (%s): %s is on none of its series (they have %s)", n.Op, strings.Join(n.Grouping, ", "), l, in)
					}
				}
			}
		case *parser.BinaryExpr:
			if vm := n.VectorMatching; vm != nil && n.LHS.Type() == parser.ValueTypeVector && n.RHS.Type() == parser.ValueTypeVector {
				lhs, rhs := c.labels(n.LHS), c.labels(n.RHS)
				if lhs == nil || rhs == nil {
					return nil
				}
				for _, l := range vm.MatchingLabels {
					// on() matches by labels both sides have; ignoring()
					// drops one that at least one side has.
					switch {
					case vm.On && (!lhs[l] || !rhs[l]):
						bad("%s on (%s): %s is not on both sides (%s and %s)", n.Op, strings.Join(vm.MatchingLabels, ", "), l, lhs, rhs)
					case !vm.On && !lhs[l] && !rhs[l]:
						bad("%s ignoring (%s): %s is on neither side (%s and %s)", n.Op, strings.Join(vm.MatchingLabels, ", "), l, lhs, rhs)
					}
				}
				one := rhs // group_left takes extra labels from the right
				if vm.Card == parser.CardOneToMany {
					one = lhs
				}
				for _, l := range vm.Include {
					if !one[l] {
						bad("group_left/group_right (%s): %s is not on the side it is taken from (%s)", strings.Join(vm.Include, ", "), l, one)
					}
				}
			}
		case *parser.Call:
			c.checkCall(n, bad)
		}
		return nil
	})
	out.labels = c.labels(root)
	return out, problems
}

// checkMatcher checks one label matcher of a selector of metric m (a
// histogram's series by its base name).
func (c *obsChecker) checkMatcher(name string, m obsMetric, lm *labels.Matcher, bad func(string, ...any)) {
	own := append(slices.Clone(m.labels), "job", "instance")
	if !slices.Contains(own, lm.Name) {
		bad("%s has no label %q (it has %q)", name, lm.Name, own)
		return
	}
	if strings.Contains(lm.Value, obsAll) && (lm.Type == labels.MatchEqual || lm.Type == labels.MatchNotEqual) {
		bad("%s: a Grafana variable in an %s matcher: use =~, multi-value and All put a regex there", lm, lm.Type)
		return
	}
	if lm.Name == "job" {
		if !slices.ContainsFunc(c.jobs, lm.Matches) {
			bad("%s: matches none of the scrape jobs of prometheus.yml %q", lm, c.jobs)
		}
		return
	}
	known, ok := c.values[name+"/"+lm.Name]
	if !ok {
		known, ok = c.values[lm.Name]
	}
	if !ok {
		return
	}
	values := []string{lm.Value}
	switch {
	case lm.Type == labels.MatchRegexp || lm.Type == labels.MatchNotRegexp:
		if !regexp.MustCompile(`^[\w|]+$`).MatchString(lm.Value) {
			return // a real regex: nothing to compare
		}
		values = strings.Split(lm.Value, "|")
	}
	for _, v := range values {
		if !slices.Contains(known, v) {
			bad("%s: %s never has the value %q (it has %q)", lm, lm.Name, v, known)
		}
	}
}

// checkCall holds functions to the kind of series they are meant for.
func (c *obsChecker) checkCall(n *parser.Call, bad func(string, ...any)) {
	kindOf := func(e parser.Expr) string { // of a range selector argument
		if ms, ok := e.(*parser.MatrixSelector); ok {
			if _, m, err := c.series(ms.VectorSelector.(*parser.VectorSelector).Name); err == nil {
				return m.kind
			}
		}
		return ""
	}
	switch n.Func.Name {
	case "rate", "irate", "increase", "resets":
		if kindOf(n.Args[0]) == "gauge" {
			bad("%s over a gauge: it is meant for counters (a gauge wants delta, deriv or *_over_time)", n.Func.Name)
		}
	case "delta", "idelta", "deriv", "predict_linear":
		if kindOf(n.Args[0]) == "counter" {
			bad("%s over a counter: counters reset on restarts, use rate or increase", n.Func.Name)
		}
	case "histogram_quantile":
		if in := c.labels(n.Args[1]); in != nil && !in["le"] {
			bad("histogram_quantile over series without le (%s): keep le in the aggregation of the _bucket series", in)
		}
	}
}

// labels is the label names the result of e has (Prometheus's rules for
// aggregations, functions and vector matching); nil where unknown.
func (c *obsChecker) labels(e parser.Node) obsLabels {
	switch n := e.(type) {
	case *parser.VectorSelector:
		_, m, err := c.series(n.Name)
		if err != nil {
			return nil
		}
		return obsLabelSet(append(m.labels, "job", "instance")...)
	case *parser.MatrixSelector:
		return c.labels(n.VectorSelector)
	case *parser.ParenExpr:
		return c.labels(n.Expr)
	case *parser.UnaryExpr:
		return c.labels(n.Expr)
	case *parser.SubqueryExpr:
		return c.labels(n.Expr)
	case *parser.StepInvariantExpr:
		return c.labels(n.Expr)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return obsLabels{}
	case *parser.AggregateExpr:
		in := c.labels(n.Expr)
		switch {
		case n.Op == parser.TOPK || n.Op == parser.BOTTOMK || n.Op == parser.LIMITK || n.Op == parser.LIMIT_RATIO:
			return in
		case n.Without:
			return in.without(n.Grouping...)
		case in == nil:
			return nil
		}
		return obsLabelSet(n.Grouping...)
	case *parser.Call:
		switch n.Func.Name {
		case "histogram_quantile":
			return c.labels(n.Args[1]).without("le")
		case "label_replace":
			return c.labels(n.Args[0]).union(obsLabelSet(n.Args[1].(*parser.StringLiteral).Val))
		case "vector", "time", "scalar", "pi":
			return obsLabels{}
		}
		out := obsLabels{}
		for _, a := range n.Args {
			if t := a.Type(); t == parser.ValueTypeVector || t == parser.ValueTypeMatrix {
				out = out.union(c.labels(a))
			}
		}
		return out
	case *parser.BinaryExpr:
		lhs, rhs := c.labels(n.LHS), c.labels(n.RHS)
		switch {
		case n.LHS.Type() == parser.ValueTypeScalar:
			return rhs
		case n.RHS.Type() == parser.ValueTypeScalar:
			return lhs
		case n.Op == parser.LOR:
			return lhs.union(rhs)
		case n.Op == parser.LAND || n.Op == parser.LUNLESS:
			return lhs
		}
		vm := n.VectorMatching
		if vm == nil {
			return nil
		}
		switch vm.Card {
		case parser.CardManyToOne:
			return lhs.union(obsLabelSet(vm.Include...))
		case parser.CardOneToMany:
			return rhs.union(obsLabelSet(vm.Include...))
		case parser.CardOneToOne:
			if vm.On {
				if lhs == nil {
					return nil
				}
				return obsLabelSet(vm.MatchingLabels...)
			}
			return lhs.without(vm.MatchingLabels...)
		}
	}
	return nil
}
