package test

// deploy/prometheus and deploy/grafana are checked against sluice itself:
// every metric, label and label value an alert or a panel names must be one
// sluice has (deploy_observability_promql_test.go), the scrape targets must
// be the services' metrics ports, and the alerts and panels the "Deploy
// across regions" issue asks for must exist. Prometheus and Grafana accept
// a misspelled metric without a word (an empty panel, an alert that never
// fires), so this is where such mistakes are caught, without promtool.
//
// Each file has one check function that takes its content and returns the
// problems found, so that TestDeployObservabilityCatchesMistakes can show
// every kind of check failing on a broken copy.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

const (
	obsPrometheusYML  = "../deploy/prometheus/prometheus.yml"
	obsAlertsYML      = "../deploy/prometheus/alerts.yml"
	obsDashboardJSON  = "../deploy/grafana/dashboards/sluice.json"
	obsDatasourcesYML = "../deploy/grafana/provisioning/datasources/prometheus.yml"
	obsDashboardsYML  = "../deploy/grafana/provisioning/dashboards/sluice.yml"
	// obsGrafanaDashboards is where deploy/grafana/dashboards is mounted in
	// the Grafana container (deploy/compose, Kubernetes' ConfigMap).
	obsGrafanaDashboards = "/var/lib/grafana/dashboards"
)

// obsTargets are the sluice scrape jobs and their targets: the service
// names of deploy/compose on the services' default --metrics ports.
var obsTargets = map[string][]string{
	"sluice-dispatcher": {"dispatcher-1:9464", "dispatcher-2:9464"},
	"sluice-executor":   {"executor-us-east:9465", "executor-eu-west:9465"},
	"sluice-gateway":    {"gateway:9466"},
}

// obsRequiredAlerts are the alerts the issue asks for, and the metric each
// must watch.
var obsRequiredAlerts = map[string]string{
	"SluiceSustained429s":      "sluice_provider_429_total",        // sustained 429s
	"SluiceQueueAgeOverBudget": "sluice_queue_deadline_used_ratio", // queue age over its deadline budget
	"SluiceCircuitOpen":        "sluice_deployment_state",          // open circuits
	"SluiceDeadLetters":        "sluice_dead_letters_total",        // dead letters growing
}

// obsRequiredPanels are the panels the issue asks for: a query that uses
// these metrics and keeps this label in its result.
var obsRequiredPanels = []struct {
	what    string
	metrics []string
	by      string
}{
	{"calls by outcome", []string{"sluice_calls_total"}, "outcome"},
	{"queue depth", []string{"sluice_queue_depth"}, "pool"},
	{"queue wait", []string{"sluice_queue_wait_seconds"}, "pool"},
	{"headroom per deployment", []string{"sluice_deployment_limit", "sluice_admissions_total"}, "deployment"},
	{"tokens per team", []string{"sluice_tokens_used_total"}, "team"},
	{"provider latency", []string{"sluice_provider_latency_seconds"}, "deployment"},
}

// obsChecks are the check of each file.
var obsChecks = map[string]func(c *obsChecker, data []byte) []string{
	obsPrometheusYML:  obsCheckPrometheus,
	obsAlertsYML:      obsCheckAlerts,
	obsDashboardJSON:  obsCheckDashboard,
	obsDatasourcesYML: obsCheckDatasources,
	obsDashboardsYML:  obsCheckDashboards,
}

func TestDeployObservability(t *testing.T) {
	c := newObsChecker(t)
	for path, check := range obsChecks {
		t.Run(filepath.Base(filepath.Dir(path))+"/"+filepath.Base(path), func(t *testing.T) {
			for _, p := range check(c, obsRead(t, path)) {
				t.Errorf("%s: %s", path, p)
			}
		})
	}
}

// Each case breaks a copy of a file the way an edit might, and the check
// must say so: a check that cannot fail proves nothing.
func TestDeployObservabilityCatchesMistakes(t *testing.T) {
	c := newObsChecker(t)
	for _, m := range []struct{ file, old, new, want string }{
		// The dashboard (its JSON escapes quotes).
		{obsDashboardJSON, `sluice_queue_depth{`, `sluice_queue_dept{`, "sluice_queue_dept is not in sluice's registry"},
		{obsDashboardJSON, `sluice_queue_wait_seconds_bucket{`, `sluice_queue_wait_seconds{`, "is a histogram"},
		{obsDashboardJSON, `sum by (outcome)`, `sum by (outcom)`, "outcom is on none of its series"},
		{obsDashboardJSON, `sum by (outcome)`, `sum by (tier)`, `no query shows calls by outcome`},
		{obsDashboardJSON, `sluice_calls_total{team=~\"$team\"`, `sluice_calls_total{teams=~\"$team\"`, `has no label "teams"`},
		{obsDashboardJSON, `team=~\"$team\"`, `team=\"$team\"`, "use =~"},
		{obsDashboardJSON, `pool=~\"$pool\"`, `pool=~\"$pools\"`, "$pools is not a variable"},
		{obsDashboardJSON, `sum by (le, deployment)`, `sum by (deployment)`, "histogram_quantile over series without le"},
		{obsDashboardJSON, `dimension=\"tokens\"`, `dimension=\"token\"`, `never has the value "token"`},
		{obsDashboardJSON, `up{job=~\"sluice-.*\"}`, `up{job=~\"slice-.*\"}`, "none of the scrape jobs"},
		{obsDashboardJSON, `sum(sluice_queue_depth{`, `sum(rate(sluice_queue_depth{`, "does not parse"},
		{obsDashboardJSON, `"uid": "${DS_PROMETHEUS}"`, `"uid": "prometheus"`, "want uid ${DS_PROMETHEUS}"},
		{obsDashboardJSON, `"query": "label_values(sluice_calls_total, team)"`, `"query": "label_values(sluice_calls_total, teams)"`, "has no label teams"},
		// Alert rules.
		{obsAlertsYML, `(sluice_queue_deadline_used_ratio{tier!="batch"})`, `(rate(sluice_queue_deadline_used_ratio{tier!="batch"}[5m]))`, "rate over a gauge"},
		{obsAlertsYML, `state="circuit_open"`, `state="circuit-open"`, `never has the value "circuit-open"`},
		{obsAlertsYML, `outcome!~"ok|canceled|invalid_request"`, `outcome!~"ok|cancelled|invalid_request"`, `"cancelled"`},
		{obsAlertsYML, `{{ $labels.team }}'s calls fail`, `{{ $labels.pool }}'s calls fail`, "$labels.pool"},
		{obsAlertsYML, `{{ $labels.deployment }} keeps`, `{{ $labels.deployment } keeps`, "unexpected \"}\" in operand"},
		{obsAlertsYML, `{{ $value | humanizePercentage }}`, `{{ $value | humanisePercentage }}`, "humanisePercentage"},
		{obsAlertsYML, "for: 10m\n", "\n", `for "": want a duration`},
		{obsAlertsYML, "severity: critical", "severity: page", `labels.severity "page"`},
		{obsAlertsYML, "alert: SluiceCircuitOpen\n", "alert: SluiceCircuitOpened\n", "no alert SluiceCircuitOpen"},
		{obsAlertsYML, "annotations:", "anotations:", "field anotations not found"},
		{obsAlertsYML, "[15m]", "[15s]", "range [15s]"},
		{obsAlertsYML, `and on (deployment)`, `and on (pool)`, "pool is not on both sides"},
		// Prometheus.
		{obsPrometheusYML, "dispatcher-2:9464", "dispatcher-2:9465", "job sluice-dispatcher: targets"},
		{obsPrometheusYML, "- alerts.yml", "- alert.yml", "lacks alerts.yml"},
		{obsPrometheusYML, "scrape_interval:", "scrape_intervall:", "scrape_intervall"},
		{obsPrometheusYML, "scrape_timeout: 10s", "scrape_timeout: 20s", `scrape_timeout "20s"`},
		// Grafana's provisioning.
		{obsDatasourcesYML, "timeInterval: 15s", "timeInterval: 30s", `jsonData.timeInterval "30s"`},
		{obsDatasourcesYML, "uid: prometheus", "uid: prom", "defaults to"},
		{obsDashboardsYML, "path: " + obsGrafanaDashboards, "path: /var/lib/grafana", `options.path "/var/lib/grafana"`},
		{obsDashboardsYML, "type: file", "type: files", `type "files"`},
	} {
		data := obsRead(t, m.file)
		if !bytes.Contains(data, []byte(m.old)) {
			t.Errorf("%s no longer holds %q: update this case", m.file, m.old)
			continue
		}
		problems := obsChecks[m.file](c, bytes.Replace(data, []byte(m.old), []byte(m.new), 1))
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, m.want) }) {
			t.Errorf("%s with %q for %q: want a problem saying %q, got %q", m.file, m.new, m.old, m.want, problems)
		}
	}
}

// The scrape targets' ports are the services' default --metrics addresses
// in cmd/sluice: a port changed there must be changed in prometheus.yml (and
// deploy/compose) too, or its target stays down.
func TestDeployObservabilityMetricsPorts(t *testing.T) {
	jobs := map[string]string{"runDispatcher": "sluice-dispatcher", "runExecutor": "sluice-executor", "runGateway": "sluice-gateway"}
	flag := regexp.MustCompile(`String\("metrics", "[^"]*:(\d+)"`)
	files, _ := filepath.Glob("../cmd/sluice/*.go")
	found := map[string]bool{}
	for _, path := range files {
		src := obsRead(t, path)
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || jobs[fn.Name.Name] == "" {
				continue
			}
			job := jobs[fn.Name.Name]
			port := ""
			if m := flag.FindSubmatch(src[fset.Position(fn.Pos()).Offset:fset.Position(fn.End()).Offset]); m != nil {
				port = string(m[1])
			}
			found[job] = port != ""
			for _, target := range obsTargets[job] {
				if port == "" || !strings.HasSuffix(target, ":"+port) {
					t.Errorf("%s: %s serves metrics on port %q by default, not that of %s", path, fn.Name.Name, port, target)
				}
			}
		}
	}
	for _, job := range jobs {
		if !found[job] {
			t.Errorf("no default --metrics address found in cmd/sluice for %s", job)
		}
	}
}

func obsRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// obsStrictYAML decodes data into v refusing unknown fields: a misspelled
// key is silently ignored by Grafana and makes Prometheus refuse to start.
func obsStrictYAML(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return dec.Decode(v)
}

func newObsChecker(t *testing.T) *obsChecker {
	t.Helper()
	metrics, err := obsRegistry()
	if err != nil {
		t.Fatal(err)
	}
	c := &obsChecker{metrics: metrics, values: obsValues()}
	var cfg obsPromConfig
	if err := obsStrictYAML(obsRead(t, obsPrometheusYML), &cfg); err != nil {
		t.Fatalf("%s: %v", obsPrometheusYML, err)
	}
	c.scrapeInterval = cfg.Global.ScrapeInterval
	for _, sc := range cfg.ScrapeConfigs {
		c.jobs = append(c.jobs, sc.JobName)
	}
	d, err := obsDecodeDashboard(obsRead(t, obsDashboardJSON))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range d.Templating.List {
		if v.Type == "datasource" {
			c.dashboardDS = v.Current.Value
		}
	}
	return c
}

// ---------------------------------------------------------------------------
// Prometheus: prometheus.yml and alerts.yml.

// obsPromConfig is the part of Prometheus's configuration that sluice's
// uses; decoded strictly, a key outside it is a mistake or belongs here.
type obsPromConfig struct {
	Global struct {
		ScrapeInterval     string            `yaml:"scrape_interval"`
		ScrapeTimeout      string            `yaml:"scrape_timeout"`
		EvaluationInterval string            `yaml:"evaluation_interval"`
		ExternalLabels     map[string]string `yaml:"external_labels"`
	} `yaml:"global"`
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

func obsCheckPrometheus(c *obsChecker, data []byte) []string {
	var cfg obsPromConfig
	if err := obsStrictYAML(data, &cfg); err != nil {
		return []string{err.Error()}
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	g := cfg.Global
	interval, err1 := model.ParseDuration(g.ScrapeInterval)
	timeout, err2 := model.ParseDuration(g.ScrapeTimeout)
	_, err3 := model.ParseDuration(g.EvaluationInterval)
	if err1 != nil || err2 != nil || err3 != nil || timeout > interval {
		bad("global: scrape_interval %q, scrape_timeout %q, evaluation_interval %q: want durations, the timeout at most the interval",
			g.ScrapeInterval, g.ScrapeTimeout, g.EvaluationInterval)
	}
	if !slices.Contains(cfg.RuleFiles, filepath.Base(obsAlertsYML)) {
		bad("rule_files %q lacks alerts.yml", cfg.RuleFiles)
	}
	for _, pattern := range cfg.RuleFiles {
		// Relative paths are relative to prometheus.yml.
		if m, err := filepath.Glob(filepath.Join(filepath.Dir(obsPrometheusYML), pattern)); err != nil || len(m) == 0 {
			bad("rule_files: %s matches no file beside prometheus.yml", pattern)
		}
	}

	// A target label named like one of sluice's would rename sluice's to
	// exported_<name> and empty the panels that use it.
	ours := map[string]bool{}
	for _, m := range c.metrics {
		for _, l := range m.labels {
			ours[l] = true
		}
	}
	jobs := map[string][]string{}
	for _, sc := range cfg.ScrapeConfigs {
		if _, dup := jobs[sc.JobName]; dup || sc.JobName == "" {
			bad("job %q is empty or repeated", sc.JobName)
		}
		jobs[sc.JobName] = []string{}
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			bad("job %s: sluice serves /metrics, not %s", sc.JobName, sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			jobs[sc.JobName] = append(jobs[sc.JobName], st.Targets...)
			for l := range st.Labels {
				if ours[l] {
					bad("job %s: target label %s clashes with sluice's label of that name", sc.JobName, l)
				}
			}
		}
	}
	for job, want := range obsTargets {
		if got := jobs[job]; !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
			bad("job %s: targets %q, want %q (deploy/compose's services on their metrics port)", job, got, want)
		}
	}
	return problems
}

// obsRules is a rule file of alerts only (a recording rule's "record" is
// an unknown field).
type obsRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

var (
	obsAlertName = regexp.MustCompile(`^Sluice[A-Z][A-Za-z0-9]*$`)
	obsLabelRef  = regexp.MustCompile(`\$labels\.(\w+)`)
)

// obsTemplate parses an annotation as Prometheus does (rules/alerting.go:
// its variables, its function names, missingkey=zero), functions stubbed.
func obsTemplate(text string) error {
	funcs := template.FuncMap{}
	for _, name := range strings.Fields(`query first label value strvalue args reReplaceAll safeHtml match title
		toUpper toLower graphLink tableLink sortByLabel stripPort stripDomain humanize humanize1024 humanizeDuration
		humanizePercentage humanizeTimestamp toTime toDuration now pathPrefix externalURL parseDuration urlQueryEscape tmpl`) {
		funcs[name] = func(...any) any { return nil }
	}
	defs := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	_, err := template.New("annotation").Funcs(funcs).Option("missingkey=zero").Parse(defs + text)
	return err
}

func obsCheckAlerts(c *obsChecker, data []byte) []string {
	var rules obsRules
	if err := obsStrictYAML(data, &rules); err != nil {
		return []string{err.Error()}
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	// rate() needs two samples in its range, and should survive a missed
	// scrape: the usual rule is four scrape intervals.
	scrape, _ := model.ParseDuration(c.scrapeInterval)
	groups, alerts := map[string]bool{}, map[string]obsExpr{}
	for _, g := range rules.Groups {
		if g.Name == "" || groups[g.Name] || len(g.Rules) == 0 {
			bad("group %q: empty or repeated name, or no rules", g.Name)
		}
		groups[g.Name] = true
		for _, r := range g.Rules {
			where := "alert " + r.Alert
			if _, dup := alerts[r.Alert]; dup || !obsAlertName.MatchString(r.Alert) {
				bad("%s: alert names are unique Sluice<CamelCase>", where)
			}
			if d, err := model.ParseDuration(r.For); err != nil || d <= 0 {
				bad("%s: for %q: want a duration over 0, so that a blip does not fire", where, r.For)
			}
			if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" && sev != "info" {
				bad("%s: labels.severity %q is not critical, warning or info", where, sev)
			}
			e, ps := c.check(r.Expr)
			alerts[r.Alert] = e
			for _, p := range ps {
				bad("%s: %s", where, p)
			}
			if len(e.vars) > 0 {
				bad("%s: Grafana variables %q in a rule", where, e.vars)
			}
			for _, rng := range e.ranges {
				if rng < 4*time.Duration(scrape) {
					bad("%s: range [%s] is under 4 scrape intervals (%s)", where, model.Duration(rng), c.scrapeInterval)
				}
			}
			for _, key := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[key]) == "" {
					bad("%s: no annotations.%s", where, key)
				}
			}
			for key, text := range r.Annotations {
				if err := obsTemplate(text); err != nil {
					bad("%s: annotations.%s: %v", where, key, err)
				}
				for _, m := range obsLabelRef.FindAllStringSubmatch(text, -1) {
					if e.labels != nil && !e.labels[m[1]] {
						bad("%s: annotations.%s uses $labels.%s, but the alert's labels are %s", where, key, m[1], e.labels)
					}
				}
			}
		}
	}
	for name, metric := range obsRequiredAlerts {
		if e, ok := alerts[name]; !ok || !slices.Contains(e.metrics, metric) {
			bad("no alert %s on %s", name, metric)
		}
	}
	return problems
}

// ---------------------------------------------------------------------------
// Grafana: the dashboard and its provisioning.

type obsDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type obsPanel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *obsDS                   `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		Datasource *obsDS `json:"datasource"`
	} `json:"targets"`
	Panels []obsPanel `json:"panels"` // a collapsed row's
}

type obsDashboard struct {
	UID        string     `json:"uid"`
	Title      string     `json:"title"`
	Panels     []obsPanel `json:"panels"`
	Templating struct {
		List []struct {
			Type       string          `json:"type"`
			Name       string          `json:"name"`
			Query      json.RawMessage `json:"query"` // a string, or {"query": ...}
			Datasource *obsDS          `json:"datasource"`
			Current    struct {
				Value any `json:"value"`
			} `json:"current"`
		} `json:"list"`
	} `json:"templating"`
}

func obsDecodeDashboard(data []byte) (obsDashboard, error) {
	var d obsDashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return d, fmt.Errorf("%s: %v", obsDashboardJSON, err)
	}
	return d, nil
}

var obsLabelValues = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

func obsCheckDashboard(c *obsChecker, data []byte) []string {
	d, err := obsDecodeDashboard(data)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if d.UID == "" || d.Title == "" {
		bad("uid %q, title %q: want both", d.UID, d.Title)
	}

	// Variables: a data source one that every query goes through (so the
	// dashboard works with any Prometheus), and label_values queries.
	dsVar := ""
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "datasource" {
			dsVar = "${" + v.Name + "}"
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if json.Unmarshal(v.Query, &q) != nil {
			var obj struct{ Query string }
			_ = json.Unmarshal(v.Query, &obj)
			q = obj.Query
		}
		m := obsLabelValues.FindStringSubmatch(strings.TrimSpace(q))
		if m == nil {
			bad("variable %s: query %q: want label_values(<selector>, <label>)", v.Name, q)
			continue
		}
		e, ps := c.check(m[1])
		for _, p := range ps {
			bad("variable %s: %s", v.Name, p)
		}
		if e.labels != nil && !e.labels[m[2]] {
			bad("variable %s: %s has no label %s", v.Name, m[1], m[2])
		}
		if v.Datasource == nil || v.Datasource.UID != dsVar {
			bad("variable %s: data source %+v, want uid %s", v.Name, v.Datasource, dsVar)
		}
	}

	var all []obsPanel
	for _, p := range d.Panels {
		all = append(append(all, p), p.Panels...)
	}
	ids, used := map[int]bool{}, map[string]bool{}
	var queries []obsExpr
	for _, p := range all {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID == 0 || ids[p.ID] {
			bad("%s: id zero or repeated", where)
		}
		ids[p.ID] = true
		if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			bad("%s: gridPos %+v outside Grafana's 24 columns", where, g)
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || len(p.Targets) == 0 {
			bad("%s: want a title and queries", where)
		}
		for _, tg := range p.Targets {
			ds := tg.Datasource
			if ds == nil {
				ds = p.Datasource
			}
			if ds == nil || ds.UID != dsVar {
				bad("%s: query %s: data source %+v, want uid %s", where, tg.RefID, ds, dsVar)
			}
			e, ps := c.check(tg.Expr)
			for _, p := range ps {
				bad("%s: query %s: %s", where, tg.RefID, p)
			}
			for _, v := range e.vars {
				used[v] = true
				if _, builtin := obsGrafanaDurations[v]; !vars[v] && !builtin {
					bad("%s: query %s: $%s is not a variable of the dashboard", where, tg.RefID, v)
				}
			}
			queries = append(queries, e)
		}
	}
	for v := range vars {
		if !used[v] && "${"+v+"}" != dsVar {
			bad("variable %s is used by no query", v)
		}
	}
	for i, a := range d.Panels {
		for _, b := range d.Panels[i+1:] {
			ga, gb := a.GridPos, b.GridPos
			if ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H {
				bad("panels %d %q and %d %q overlap", a.ID, a.Title, b.ID, b.Title)
			}
		}
	}
	for _, want := range obsRequiredPanels {
		if !slices.ContainsFunc(queries, func(e obsExpr) bool {
			return e.labels[want.by] && !slices.ContainsFunc(want.metrics, func(m string) bool { return !slices.Contains(e.metrics, m) })
		}) {
			bad("no query shows %s (%s by %s)", want.what, strings.Join(want.metrics, " and "), want.by)
		}
	}
	return problems
}

func obsCheckDatasources(c *obsChecker, data []byte) []string {
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, UID, Type, Access, URL string
			IsDefault                    bool `yaml:"isDefault"`
			Editable                     bool
			JSONData                     struct {
				HTTPMethod   string `yaml:"httpMethod"`
				TimeInterval string `yaml:"timeInterval"`
			} `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	if err := obsStrictYAML(data, &ds); err != nil {
		return []string{err.Error()}
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if ds.APIVersion != 1 {
		bad("apiVersion %d, want 1", ds.APIVersion)
	}
	found := false
	for _, s := range ds.Datasources {
		if s.Type != "prometheus" || s.UID != c.dashboardDS {
			continue
		}
		found = true
		if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || s.Access != "proxy" {
			bad("data source %s: url %q, access %q: want an http URL Grafana's server reaches (proxy)", s.Name, s.URL, s.Access)
		}
		// $__rate_interval is four times this: it must be the scrape
		// interval, or rate() over it sees too few samples.
		if s.JSONData.TimeInterval != c.scrapeInterval {
			bad("data source %s: jsonData.timeInterval %q, want prometheus.yml's scrape_interval %q", s.Name, s.JSONData.TimeInterval, c.scrapeInterval)
		}
	}
	if !found {
		bad("no prometheus data source with the uid the dashboard defaults to (%v)", c.dashboardDS)
	}
	return problems
}

func obsCheckDashboards(_ *obsChecker, data []byte) []string {
	var prov struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name                  string
			OrgID                 int `yaml:"orgId"`
			Folder, Type          string
			DisableDeletion       bool `yaml:"disableDeletion"`
			AllowUIUpdates        bool `yaml:"allowUiUpdates"`
			UpdateIntervalSeconds int  `yaml:"updateIntervalSeconds"`
			Options               struct {
				Path                      string
				FoldersFromFilesStructure bool `yaml:"foldersFromFilesStructure"`
			}
		} `yaml:"providers"`
	}
	if err := obsStrictYAML(data, &prov); err != nil {
		return []string{err.Error()}
	}
	var problems []string
	if prov.APIVersion != 1 || len(prov.Providers) == 0 {
		problems = append(problems, fmt.Sprintf("apiVersion %d, %d providers: want 1, and a provider", prov.APIVersion, len(prov.Providers)))
	}
	for _, p := range prov.Providers {
		if p.Type != "file" || p.Options.Path != obsGrafanaDashboards {
			problems = append(problems, fmt.Sprintf("provider %s: type %q, options.path %q: want a file provider reading %s, where deploy/grafana/dashboards is mounted",
				p.Name, p.Type, p.Options.Path, obsGrafanaDashboards))
		}
	}
	return problems
}
