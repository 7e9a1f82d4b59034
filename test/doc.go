// Package test holds sluice's end-to-end tests: whole sluice clusters
// (embedded nats-server, dispatchers, executors, fake provider) started
// inside one test process, driven through the wire protocol as a client in
// any language would drive them.
package test
