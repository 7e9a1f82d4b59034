package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/health"
)

// deploymentHealth is one row of `sluice health`.
type deploymentHealth struct {
	Deployment    string                    `json:"deployment"`
	Pool          string                    `json:"pool"`
	Region        string                    `json:"region"`
	State         string                    `json:"state"`
	ConfiguredRPM int64                     `json:"configured_rpm"`
	ConfiguredTPM int64                     `json:"configured_tpm"`
	EffectiveRPM  float64                   `json:"effective_rpm"`
	EffectiveTPM  float64                   `json:"effective_tpm"`
	Learned       messages.DeploymentHealth `json:"learned"`
}

func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("health", stderr)
	var nf natsFlags
	nf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	enable := fs.String("enable", "", "put this deployment back in rotation (after insufficient_quota), then print")
	if err := parse(fs, args); err != nil {
		return err
	}
	nc, js, err := nf.connectJetStream("sluice health")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	cfgKV, err := js.KeyValue(ctx, messages.BucketConfig)
	if err != nil {
		return fmt.Errorf("no sluice here yet (%w)", err)
	}
	cfg, _, err := config.Fetch(ctx, cfgKV)
	if err != nil {
		return fmt.Errorf("live configuration: %w", err)
	}
	healthKV, err := js.KeyValue(ctx, messages.BucketHealth)
	if err != nil {
		return fmt.Errorf("health bucket: %w", err)
	}
	store := health.NewStore(healthKV)
	if err := store.Start(ctx); err != nil {
		return err
	}
	defer store.Stop()
	if *enable != "" {
		if _, ok := cfg.Deployment(*enable); !ok {
			return fmt.Errorf("-enable: no deployment %q in the live configuration", *enable)
		}
		if err := store.Enable(ctx, *enable); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "%s is back in rotation\n", *enable)
	}
	rows := healthRows(cfg, store, time.Now())
	if *asJSON {
		return writeJSON(stdout, rows)
	}
	printHealth(stdout, rows)
	return nil
}

// healthRows describes every configured deployment.
func healthRows(cfg *config.Config, store *health.Store, now time.Time) []deploymentHealth {
	var rows []deploymentHealth
	for _, pool := range cfg.Pools {
		for _, d := range pool.Deployments {
			h := store.Get(d.ID)
			rpm, tpm := health.Effective(d.RPM, d.TPM, h, now, cfg.Health.LearnedRecovery)
			state := health.StateOf(d.RPM, d.TPM, h, now, cfg.Health.LearnedRecovery)
			rows = append(rows, deploymentHealth{
				Deployment: d.ID, Pool: d.Pool(), Region: d.Region, State: state,
				ConfiguredRPM: d.RPM, ConfiguredTPM: d.TPM, EffectiveRPM: rpm, EffectiveTPM: tpm,
				Learned: h,
			})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Deployment < rows[j].Deployment })
	return rows
}

func printHealth(w io.Writer, rows []deploymentHealth) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEPLOYMENT\tPOOL\tREGION\tSTATE\tRPM (configured)\tTPM (configured)\tDETAIL")
	now := time.Now()
	for _, r := range rows {
		detail := ""
		switch r.State {
		case health.StateDisabled:
			detail = r.Learned.DisabledReason + "; re-enable with: sluice health -enable " + r.Deployment
			if !r.Learned.DisabledUntil.IsZero() {
				detail = r.Learned.DisabledReason + "; back in " + r.Learned.DisabledUntil.Sub(now).Round(time.Second).String()
			}
		case health.StateCooling:
			detail = fmt.Sprintf("%s; for %s more", r.Learned.CooldownReason, r.Learned.CooldownUntil.Sub(now).Round(time.Millisecond))
		case health.StateLimited:
			detail = health.LimitedBecause(r.Learned, now)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.0f (%d)\t%.0f (%d)\t%s\n", r.Deployment, r.Pool, r.Region, r.State,
			r.EffectiveRPM, r.ConfiguredRPM, r.EffectiveTPM, r.ConfiguredTPM, detail)
	}
	_ = tw.Flush()
}
