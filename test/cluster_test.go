//go:build linux

package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/attempts"
	"github.com/sluicehq/sluice/services/client"
	"github.com/sluicehq/sluice/services/results"
	"github.com/sluicehq/sluice/services/streams"
)

// runSluice runs a sluice command to its end as user on servers, and
// returns its standard output. args are the command's words and flags;
// the connection flags go after them.
func (c *natsCluster) runSluice(ctx context.Context, t *testing.T, user, servers string, args ...string) (string, error) {
	t.Helper()
	natsArgs, env := c.natsArgs(user, servers)
	cmd := exec.CommandContext(ctx, c.sluiceBin, append(append([]string(nil), args...), natsArgs...)...)
	cmd.Env = append(cmd.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("sluice %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// TestClusterDeployment runs deploy/nats as a deployment runs it (three
// hub servers, a leaf node per region, TLS everywhere, a NATS user per
// team and per service) with sluice's dispatcher on the hub and each
// region's executor on its region's leaf node, and checks that teams'
// calls are served by the right region, and that the NATS servers
// themselves hold every user to its own subjects.
func TestClusterDeployment(t *testing.T) {
	c := startNATSCluster(t)
	c.startSluice(1, 1, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("calls served through each region's leaf node", func(t *testing.T) {
		for _, region := range clusterRegions {
			// A team application in the region, on the region's leaf
			// node, with the sluice command: the hub's JetStream through
			// the leaf, domain hub.
			out, err := c.runSluice(ctx, t, "search", c.leafs[region].clientURL, "call",
				"--js-domain", "hub", "--team", "search", "--tier", "standard",
				"--model", "m-"+region, "--prompt", "hello", "--max-tokens", "8", "--timeout", "30s")
			if err != nil {
				t.Fatal(err)
			}
			var r messages.Result
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("sluice call printed %q: %v", out, err)
			}
			if r.Status != messages.StatusOK || r.Region != region || r.Deployment != region+"-1" {
				t.Fatalf("call for m-%s via leaf-%s: %+v (error %+v)", region, region, r, r.Error)
			}

			// A team application connected to the hub, with the Go
			// client: served by the same region's executor, through the
			// hub and the region's leaf node.
			cc := c.connect("analytics", c.hubURLs())
			cl, err := client.New(cc.Conn)
			if err != nil {
				t.Fatal(err)
			}
			res, err := cl.Call(ctx, "analytics", messages.TierBatch, &messages.CallRequest{
				Model: "m-" + region, Body: json.RawMessage(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":8}`),
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != messages.StatusOK || res.Region != region {
				t.Fatalf("analytics call for m-%s via the hub: %+v (error %+v)", region, res, res.Error)
			}
			// Its stored result, fetched as a reconnecting client does.
			// Any replica answers a direct get, and a follower may not
			// have stored the result yet when the subscriber has it.
			var fetchErr error
			waitUntil(t, "the stored result of "+res.ID, 10*time.Second, func() bool {
				var stored *messages.Result
				stored, fetchErr = results.FetchDirect(ctx, cc.Conn, "", "analytics", res.ID)
				return fetchErr == nil && stored.ID == res.ID
			})
		}
		// Each region's key reached the provider from that region only
		// (the fake refuses any other key with 401).
		st := c.fake.Stats()
		for _, region := range clusterRegions {
			if n := st.Keys[c.secrets[region]].Served; n != 2 {
				t.Errorf("region %s's key served %d calls, want 2", region, n)
			}
		}
		if st.Total.Unauthorized != 0 {
			t.Errorf("the provider refused %d calls for their key", st.Total.Unauthorized)
		}
	})

	t.Run("the gateway on a leaf node", func(t *testing.T) {
		// A regional gateway: on eu-west's leaf node, the hub's JetStream
		// through it, for a team application in the region.
		url := c.startGateway(c.leafs["eu-west"].clientURL, "hub")
		resp := gatewayPost(ctx, t, url, "/v1/chat/completions",
			`{"model":"m-eu-west","messages":[{"role":"user","content":"hi"}],"max_tokens":8}`,
			"Authorization", "Bearer "+clusterGatewayToken)
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "chat.completion") {
			t.Fatalf("gateway: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("a leaf node's certificate cannot join the hub cluster", func(t *testing.T) {
		// A server holding leaf-us-east's certificate and key (signed by
		// the same CA) tries to join the cluster as a route; the hub
		// servers accept routes only from certificates that name a route
		// host, so they refuse it.
		rogue := c.startRogueRoute("leaf-us-east")
		defer rogue.stop()
		// It tried, and a hub server refused it.
		rogue.waitLog(t, "Authorization Violation", 30*time.Second)
		time.Sleep(time.Second)
		for _, h := range c.hubs {
			if names := routeNames(t, h); names["rogue"] {
				t.Errorf("%s accepted a route from a server with a leaf node's certificate: %v", h.name, names)
			}
		}
	})

	t.Run("streams and buckets replicated on the three hub servers", func(t *testing.T) {
		js := c.connect("operator", c.hubURLs()).jetStream(t, "")
		names := js.StreamNames(ctx)
		n := 0
		for name := range names.Name() {
			if !strings.HasPrefix(name, "SLUICE_") && !strings.HasPrefix(name, "KV_SLUICE_") {
				continue
			}
			n++
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			info := s.CachedInfo()
			if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
				t.Errorf("stream %s: replicas %d, cluster %+v; want 3 replicas", name, info.Config.Replicas, info.Cluster)
			}
		}
		if err := names.Err(); err != nil {
			t.Fatal(err)
		}
		if want := reflect.TypeFor[streams.Resources]().NumField(); n != want {
			t.Errorf("%d sluice streams and buckets, want %d", n, want)
		}
	})

	t.Run("teams: every tier they may use works", func(t *testing.T) {
		cc := c.connect("search", c.hubURLs())
		allowed := map[string][]messages.Tier{
			"search":    {messages.TierCritical, messages.TierHigh, messages.TierStandard},
			"analytics": {messages.TierStandard, messages.TierBatch},
		}
		for team, tiers := range allowed {
			if team != cc.user {
				cc = c.connect(team, c.leafs["eu-west"].clientURL)
			}
			cl, err := client.New(cc.Conn, client.WithDomain("hub"))
			if err != nil {
				t.Fatal(err)
			}
			for _, tier := range tiers {
				res, err := cl.Call(ctx, team, tier, &messages.CallRequest{
					Model: "m-us-east", Body: json.RawMessage(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":8}`),
				})
				if err != nil {
					t.Fatalf("%s on %s: %v", team, tier, err)
				}
				if res.Status != messages.StatusOK {
					t.Fatalf("%s on %s: %+v", team, tier, res.Error)
				}
			}
		}
	})

	t.Run("teams: the servers refuse what is not theirs", func(t *testing.T) {
		for _, at := range []struct{ server, urls, api string }{
			{"the hub", c.hubURLs(), "$JS.API."},
			{"leaf-us-east", c.leafs["us-east"].clientURL, "$JS.hub.API."},
		} {
			for _, tc := range []struct {
				team, other    string
				forbiddenTiers []string
			}{
				{"search", "analytics", []string{"batch"}},
				{"analytics", "search", []string{"critical", "high"}},
			} {
				t.Logf("team %s on %s", tc.team, at.server)
				cc := c.connect(tc.team, at.urls)
				team, other := tc.team, tc.other
				for _, tier := range tc.forbiddenTiers {
					cc.expectRefused(t, "pub", "sluice.call."+team+"."+tier)
				}
				for _, subj := range []string{
					// Another team's calls, cancellations and results.
					"sluice.call." + other + ".standard",
					"sluice.cancel." + other + ".some-call",
					"$JS.API.DIRECT.GET.SLUICE_RESULTS.sluice.result." + other + ".some-call",
					"$JS.hub.API.DIRECT.GET.SLUICE_RESULTS.sluice.result." + other + ".some-call",
					// Around admission: retries, work, forged results
					// (on the subject results reach subscribers on, and
					// as the answers services publish), attempt claims.
					"sluice.retry." + team + ".standard",
					"sluice.exec.us-east",
					"sluice.result." + team + ".forged",
					"sluice.answer." + team + ".forged",
					"sluice.answer." + other + ".forged",
					"sluice.attempt." + team + ".some-call.1.0",
					"sluice.attempt." + other + ".some-call.1.0",
					"$JS.API.DIRECT.GET.SLUICE_ATTEMPTS.sluice.attempt." + team + ".some-call.1.0",
					"$JS.hub.API.DIRECT.GET.SLUICE_ATTEMPTS.sluice.attempt." + team + ".some-call.1.0",
					"$JS.API.STREAM.INFO.SLUICE_ATTEMPTS",
					// Any other JetStream or KV request.
					"$JS.API.DIRECT.GET.SLUICE_RESULTS",
					"$JS.API.STREAM.INFO.SLUICE_RESULTS",
					"$JS.API.CONSUMER.CREATE.SLUICE_RESULTS.spy",
					"$JS.hub.API.CONSUMER.CREATE.SLUICE_RESULTS.spy",
					"$JS.API.STREAM.PURGE.SLUICE_CALLS",
					"$KV.SLUICE_CONFIG.config",
					"$JS.hub.API.$KV.SLUICE_CONFIG.config",
					"$JS.API.DIRECT.GET.KV_SLUICE_CONFIG.$KV.SLUICE_CONFIG.config",
				} {
					cc.expectRefused(t, "pub", subj)
				}
				for _, subj := range []string{
					"sluice.result." + other + ".>",
					"sluice.result.*.*",
					"sluice.answer." + team + ".>",
					"sluice.attempt.>",
					"sluice.stream." + other + ".>",
					"sluice.call.>",
					"sluice.exec.>",
					"_INBOX_" + other + ".>",
					"_INBOX.>",
					">",
				} {
					cc.expectRefused(t, "sub", subj)
				}
				// The direct get a team may send reads its own subjects
				// only: the server refuses a request that asks for a
				// sequence (any team's result) instead.
				m, err := cc.Request(at.api+"DIRECT.GET.SLUICE_RESULTS.sluice.result."+team+".some-call", []byte(`{"seq":1}`), 5*time.Second)
				if err != nil {
					t.Fatalf("direct get with a sequence: %v", err)
				}
				if st := m.Header.Get("Status"); st != "408" {
					t.Errorf("direct get with a sequence: status %q %q, want 408; %s", st, m.Header.Get("Description"), m.Data)
				}
				// What the team needs besides publishing calls.
				cc.expectAllowed(t, "pub", "sluice.cancel."+team+".no-such-call")
				for _, subj := range []string{"sluice.result." + team + ".>", "sluice.stream." + team + ".>", "_INBOX_" + team + ".>"} {
					cc.expectAllowed(t, "sub", subj)
				}
			}
		}
	})

	t.Run("services: each user only where its job needs", func(t *testing.T) {
		for _, region := range clusterRegions {
			other := "eu-west"
			if region == other {
				other = "us-east"
			}
			cc := c.connect("exec-"+region, c.leafs[region].clientURL)
			// Another region's work (and so the calls its keys serve).
			for _, subj := range []string{
				"$JS.hub.API.CONSUMER.CREATE.SLUICE_EXEC.exec_" + other + ".sluice.exec." + other,
				"$JS.hub.API.CONSUMER.MSG.NEXT.SLUICE_EXEC.exec_" + other,
				"$JS.hub.API.CONSUMER.CREATE.SLUICE_EXEC.spy",
				"$JS.hub.API.DIRECT.GET.SLUICE_EXEC",
				"$JS.hub.API.STREAM.MSG.GET.SLUICE_EXEC",
				// Neither the configuration nor the streams are its to change.
				"$JS.hub.API.$KV.SLUICE_CONFIG.config",
				"$JS.hub.API.STREAM.DELETE.SLUICE_CALLS",
				"$JS.hub.API.STREAM.PURGE.SLUICE_EXEC",
				"$JS.hub.API.STREAM.UPDATE.SLUICE_RESULTS",
				"$JS.hub.API.STREAM.UPDATE.KV_SLUICE_CONFIG",
				"$JS.hub.API.STREAM.CREATE.SLUICE_RESULTS",
				"$JS.hub.API.STREAM.UPDATE.SLUICE_ATTEMPTS",
				"$JS.hub.API.STREAM.PURGE.SLUICE_ATTEMPTS",
				"$JS.hub.API.STREAM.MSG.DELETE.SLUICE_ATTEMPTS",
				// Nor may it call as a team, or publish results other
				// than as answers the stream stores.
				"sluice.call.search.critical",
				"sluice.result.search.forged",
			} {
				cc.expectRefused(t, "pub", subj)
			}
			for _, subj := range []string{"sluice.exec.>", "sluice.exec." + other, "sluice.call.>", "sluice.result.>", "sluice.answer.>", "sluice.attempt.>", "_INBOX_exec-" + other + ".>"} {
				cc.expectRefused(t, "sub", subj)
			}
			// What it needs to claim attempts, through its leaf node:
			// publish a claim, have a second refused, look it up.
			js := cc.jetStream(t, "hub")
			res, err := streams.Open(ctx, js)
			if err != nil {
				t.Fatal(err)
			}
			claims := attempts.New(js, res.Attempts)
			call := "permission-check-" + region
			// A refused publish is never acknowledged: do not wait long.
			claimCtx, cancelClaim := context.WithTimeout(ctx, 10*time.Second)
			defer cancelClaim()
			if err := claims.Claim(claimCtx, "search", call, 1, 0, attempts.Claim{Deployment: region + "-1", Region: region, At: time.Now()}); err != nil {
				t.Fatalf("exec-%s: claim: %v", region, err)
			}
			if err := claims.Claim(claimCtx, "search", call, 1, 0, attempts.Claim{Deployment: region + "-1", Region: region, At: time.Now()}); !errors.Is(err, attempts.ErrClaimed) {
				t.Fatalf("exec-%s: a second claim: %v, want ErrClaimed", region, err)
			}
			var got attempts.Claim
			waitUntil(t, "exec-"+region+"'s claim looked up", 10*time.Second, func() bool {
				got, err = claims.Lookup(ctx, "search", call, 1, 0)
				return err == nil
			})
			if got.Region != region {
				t.Fatalf("exec-%s: Lookup: %+v", region, got)
			}
		}

		d := c.connect("dispatcher", c.hubURLs())
		for _, subj := range []string{
			"sluice.call.search.critical", "$JS.API.STREAM.DELETE.SLUICE_CALLS", "$JS.API.CONSUMER.CREATE.SLUICE_EXEC.spy",
			"sluice.result.search.forged", "$JS.API.STREAM.PURGE.SLUICE_ATTEMPTS",
		} {
			d.expectRefused(t, "pub", subj)
		}
		// It hands stranded work back: claims it as handed back, and
		// publishes its next admission.
		d.expectAllowed(t, "pub", "sluice.attempt.search.some-call.1.0")
		d.expectAllowed(t, "pub", "sluice.retry.search.standard")
		for _, subj := range []string{"sluice.result.>", "sluice.call.>", "sluice.exec.>", "sluice.attempt.>", "_INBOX_search.>"} {
			d.expectRefused(t, "sub", subj)
		}
		// It looks executors' claims up (a direct get on SLUICE_ATTEMPTS).
		djs := d.jetStream(t, "")
		dres, err := streams.Open(ctx, djs)
		if err != nil {
			t.Fatal(err)
		}
		var lookupErr error
		waitUntil(t, "the dispatcher looks exec-us-east's claim up", 10*time.Second, func() bool {
			_, lookupErr = attempts.New(djs, dres.Attempts).Lookup(ctx, "search", "permission-check-us-east", 1, 0)
			return lookupErr == nil
		})
		if _, err := attempts.New(djs, dres.Attempts).Lookup(ctx, "search", "never-claimed", 1, 0); !errors.Is(err, attempts.ErrNotClaimed) {
			t.Errorf("dispatcher: Lookup of an attempt never claimed: %v, want ErrNotClaimed", err)
		}

		g := c.connect("gateway", c.hubURLs())
		for _, subj := range []string{
			"sluice.exec.us-east", "sluice.result.search.forged", "sluice.answer.search.forged", "sluice.attempt.search.some-call.1.0",
			"$KV.SLUICE_CONFIG.config", "$JS.API.STREAM.DELETE.SLUICE_RESULTS", "$JS.API.DIRECT.GET.KV_SLUICE_LIMITER.$KV.SLUICE_LIMITER.x",
			"$JS.API.DIRECT.GET.SLUICE_ATTEMPTS.sluice.attempt.search.some-call.1.0",
		} {
			g.expectRefused(t, "pub", subj)
		}
		for _, subj := range []string{"sluice.exec.>", "sluice.call.>", "_INBOX_search.>"} {
			g.expectRefused(t, "sub", subj)
		}
		g.expectAllowed(t, "sub", "sluice.result.*.*")
		g.expectAllowed(t, "pub", "sluice.cancel.search.no-such-call")
	})

	t.Run("operators change the configuration and watch the dispatchers", func(t *testing.T) {
		data, err := os.ReadFile(c.configPath)
		if err != nil {
			t.Fatal(err)
		}
		changed := filepath.Join(t.TempDir(), "sluice.yaml")
		text := strings.Replace(string(data), "analytics: {tiers: [standard, batch]}", "analytics: {tiers: [standard, batch], max_queued: 4321}", 1)
		if err := os.WriteFile(changed, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := c.runSluice(ctx, t, "operator", c.hubURLs(), "config", "apply", "-f", changed); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		out, err := c.runSluice(ctx, t, "operator", c.hubURLs(), "config", "get")
		if err != nil || !strings.Contains(out, "4321") {
			t.Fatalf("config get after apply: %v\n%s", err, out)
		}
		out, err = c.runSluice(ctx, t, "operator", c.hubURLs(), "status", "--json")
		if err != nil || !strings.Contains(out, "d1") {
			t.Fatalf("status: %v\n%s", err, out)
		}
	})

	t.Run("services were refused nothing", func(t *testing.T) {
		for _, v := range c.serviceViolations() {
			t.Error(v)
		}
	})

	t.Run("provider keys stay with their region's executors", func(t *testing.T) {
		// Everything sluice stored, read as operator (who may read every
		// stream and bucket), and every process's log: no key anywhere.
		js := c.connect("operator", c.hubURLs()).jetStream(t, "")
		stored := clusterStoredMessages(ctx, t, js)
		if len(stored) == 0 {
			t.Fatal("read nothing stored: the scan is broken")
		}
		for region, secret := range c.secrets {
			for where, data := range stored {
				if strings.Contains(data, secret) {
					t.Errorf("region %s's provider key is stored in %s", region, where)
				}
			}
			if logs := c.logsContain(secret); len(logs) > 0 {
				t.Errorf("region %s's provider key is in the logs of %v", region, logs)
			}
		}
	})
}

// clusterStoredMessages is every message of every sluice stream and KV
// bucket, by stream and sequence.
func clusterStoredMessages(ctx context.Context, t *testing.T, js jetstream.JetStream) map[string]string {
	t.Helper()
	out := map[string]string{}
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		state := s.CachedInfo().State
		for seq := state.FirstSeq; seq <= state.LastSeq && state.Msgs > 0; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				t.Fatalf("%s #%d: %v", name, seq, err)
			}
			out[fmt.Sprintf("%s #%d (%s)", name, seq, m.Subject)] = fmt.Sprint(m.Header) + string(m.Data)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
