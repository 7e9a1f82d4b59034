// Package bootstrap owns who stores sluice's configuration in KV, and
// which one a service uses: a long-running service (dispatcher, executor,
// gateway) on start-up, where KV wins (Resolve), and a person making a
// configuration live (Apply, `sluice config apply`). The README's "Live
// configuration" states the rules; Resolve and Apply apply them.
//
// On start-up:
//
//   - Without a file, a service uses the configuration stored in KV
//     (bucket SLUICE_CONFIG); while there is none it waits, saying what to
//     do every 30 s.
//   - With a file (--config FILE): once KV holds a configuration, KV's is
//     used, and a file that differs is only warned about. While KV holds
//     none, a service that may store (Config.Store: dispatchers) creates
//     sluice's streams if they are missing and stores the file, unless
//     another stored one first, which it then uses; a service that may
//     not (executors and gateways, which may run at the edge with
//     narrower permissions) waits for the bucket and uses the file until
//     a configuration is stored.
//   - Config.Force stores the file over whatever KV holds (--config-force).
//
// Resolve only decides where the starting configuration comes from:
// following changes afterwards is config.Watch's.
//
// Apply stores a person's configuration only over the revision they read
// (or name), never the same one twice, and only if executors serve every
// region it names (unless forced); see Apply.
package bootstrap
