package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/coapgw/coapgw/internal/awstest"
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
	"github.com/coapgw/coapgw/internal/httpapitest"
)

// The monitoring files under deploy/: the Grafana dashboard and the Prometheus alerting rules.
var (
	grafanaDashboard = filepath.Join("..", "..", "deploy", "grafana", "coapgw.json")
	alertRules       = filepath.Join("..", "..", "deploy", "prometheus", "alerts.yml")
	alertRuleTests   = filepath.Join("..", "..", "deploy", "prometheus", "alerts_test.yml")
)

// missingPeer skips the test for a peer that is not installed, or fails it under
// COAPGW_REQUIRE_PEERS (scripts/test.sh installs the peers, then sets it).
func missingPeer(t *testing.T, what string) {
	t.Helper()
	if httpapitest.RequirePeers() {
		t.Fatalf("%s not installed (scripts/test.sh installs it)", what)
	}
	t.Skipf("%s not installed; scripts/test.sh installs it", what)
}

// TestAlertRulesPromtool: promtool (Debian's prometheus package) accepts the alerting rules,
// and their unit tests (alerts_test.yml: the spool backlog, the 5.03 share, kernel drops and
// the set-aside rate fire when they should and not before) pass.
func TestAlertRulesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		missingPeer(t, "promtool (Debian prometheus)")
	}
	for _, args := range [][]string{{"check", "rules", alertRules}, {"test", "rules", alertRuleTests}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// metricRef is a metric name the monitoring files use: the files, and the label names their
// selectors match on with the file of each.
type metricRef struct {
	files  []string
	labels map[string]string
}

var (
	metricNameRE = regexp.MustCompile(`\b(?:coapgw|go|process)_[a-zA-Z0-9_]*[a-zA-Z0-9]\b`)
	selectorRE   = regexp.MustCompile(`\b((?:coapgw|go|process)_[a-zA-Z0-9_]*[a-zA-Z0-9])\{([^}]*)\}`)
	matcherRE    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
)

// usedMetrics collects the metric names in text (PromQL, and the names the descriptions point
// operators to) and, per name, the labels its selectors match on.
func usedMetrics(into map[string]*metricRef, file, text string) {
	for _, name := range metricNameRE.FindAllString(text, -1) {
		if into[name] == nil {
			into[name] = &metricRef{labels: map[string]string{}}
		}
		if !slices.Contains(into[name].files, file) {
			into[name].files = append(into[name].files, file)
		}
	}
	for _, m := range selectorRE.FindAllStringSubmatch(text, -1) {
		for _, l := range matcherRE.FindAllStringSubmatch(m[2], -1) {
			into[m[1]].labels[l[1]] = file
		}
	}
}

// jsonStrings returns every string value in a decoded JSON document.
func jsonStrings(v any, out []string) []string {
	switch v := v.(type) {
	case string:
		out = append(out, v)
	case []any:
		for _, e := range v {
			out = jsonStrings(e, out)
		}
	case map[string]any:
		for _, e := range v {
			out = jsonStrings(e, out)
		}
	}
	return out
}

// scrapedSeries maps each metric name of a Prometheus text exposition to the label names its
// series carry.
func scrapedSeries(into map[string][]string, text string) {
	for line := range strings.Lines(text) {
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		name, rest, _ := strings.Cut(strings.Fields(line)[0], "{")
		if _, ok := into[name]; !ok {
			into[name] = nil
		}
		for _, l := range matcherRE.FindAllStringSubmatch(rest, -1) {
			if !slices.Contains(into[name], l[1]) {
				into[name] = append(into[name], l[1])
			}
		}
	}
}

// TestMonitoringMetricsExist: every metric name the Grafana dashboard and the alerting rules
// use is one the real gateway exposes on /metrics, and every label their selectors match on is
// one its series carry. The gateway runs twice: in local mode with DTLS (a fleet key), after a
// few device requests, and in AWS mode forwarding to SQS (moto), for the forwarder's metrics.
func TestMonitoringMetricsExist(t *testing.T) {
	used := map[string]*metricRef{}
	b, err := os.ReadFile(grafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s is not JSON: %v", grafanaDashboard, err)
	}
	checkDashboardPanels(t, dash)
	usedMetrics(used, grafanaDashboard, strings.Join(jsonStrings(dash, nil), "\n"))
	rules, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	usedMetrics(used, alertRules, string(rules))
	if len(used) < 20 {
		t.Fatalf("found only %d metric names in the dashboard and the rules", len(used))
	}

	series := map[string][]string{}
	keyFile := filepath.Join(t.TempDir(), "fleet.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	local := startGW(t, t.TempDir(), "--process", "local", "--fleet-key-file", keyFile, "--plain-coap", "open")
	c, err := coaptest.Dial(local.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range []string{`{"temp":21.5}`, `{"temp":`} {
		if resp, err := c.Post("/sensor/dev-1", p); err != nil || resp.Code != coapmsg.Changed && resp.Code != coapmsg.BadRequest {
			t.Fatalf("POST %s: %v %+v", p, err, resp)
		}
	}
	scrapedSeries(series, scrape(t, local))

	aws := false
	t.Run("aws", func(t *testing.T) {
		m := awstest.Start(t)
		awsEnv(t)
		queue := m.CreateQueue(t.Context(), "coapgw-monitoring", nil)
		g := startGW(t, t.TempDir(), "--queue", queue, "--aws-endpoint", m.Endpoint())
		scrapedSeries(series, scrape(t, g))
		aws = true
	})

	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range used {
			if !yield(n) {
				return
			}
		}
	}) {
		ref := used[name]
		labels, ok := series[name]
		if !ok {
			if !aws && strings.HasPrefix(name, "coapgw_forward_") {
				t.Logf("%s (%s) not checked: the AWS-mode gateway did not run", name, ref.files)
				continue
			}
			t.Errorf("%s use %s, which the gateway's /metrics does not have", ref.files, name)
			continue
		}
		for l, file := range ref.labels {
			if l != "instance" && l != "job" && !slices.Contains(labels, l) {
				t.Errorf("%s matches %s on label %q, which its series do not carry (they have %v)", file, name, l, labels)
			}
		}
	}
}

// checkDashboardPanels checks what Grafana's import needs of the dashboard's panels: a unique
// id, a position, and for each panel but the rows at least one query, each with an expression
// on the dashboard's data source variable.
func checkDashboardPanels(t *testing.T, dash any) {
	t.Helper()
	var d struct {
		Title  string
		Panels []struct {
			ID         int
			Type       string
			Title      string
			GridPos    *struct{ H, W, X, Y int } `json:"gridPos"`
			Datasource struct{ UID string }
			Targets    []struct{ Expr string }
		}
	}
	b, _ := json.Marshal(dash)
	if err := json.Unmarshal(b, &d); err != nil || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("the dashboard has no title or panels: %v", err)
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] || p.ID == 0 || p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: id %d (unique, non-zero) and gridPos %+v (within 24 columns) needed", p.Title, p.ID, p.GridPos)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: data source %q and %d queries, want ${datasource} and at least one", p.Title, p.Datasource.UID, len(p.Targets))
		}
		for _, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %q has an empty query", p.Title)
			}
		}
	}
}
