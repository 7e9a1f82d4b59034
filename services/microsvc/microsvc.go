// Package microsvc owns how sluice's long-lived services present
// themselves on NATS by the conventions of the NATS micro framework
// (github.com/nats-io/nats.go/micro), and the request-reply way to call:
//
//   - Register and Wrap register a service as sluice-<kind> (dispatcher,
//     executor, gateway, requests) with its version, a description and
//     metadata (id, region, ...), so that `nats micro ls`, `nats micro
//     info` and `nats micro stats` list every instance, and $SRV.PING,
//     $SRV.INFO and $SRV.STATS (optionally .<name>, .<name>.<id>) answer.
//   - Requests is the service sluice-requests: its endpoint "call" on
//     sluice.request.<team>.<tier> takes a call as published on
//     sluice.call.<team>.<tier>, submits it there as any client would
//     (package client), and replies with the call's terminal result, the
//     same Result JSON its result subject carries: `nats req` calls sluice
//     in one round trip.
//
// # Where the request endpoint runs
//
// `sluice gateway` hosts Requests on its NATS connection (flag -requests,
// on by default), and `sluice dev` runs it whether or not it serves HTTP.
// The gateway is the service that already speaks for every team: its NATS
// user is the one allowed to publish any team's calls and cancellations
// and to read their results (deploy/nats/accounts.conf), while the
// dispatchers deliberately may not publish calls. Running the endpoint
// there adds no right to any user but the subscription to
// sluice.request.> and the replies; the gateways answer as one queue
// group (sluice-requests), so each request is served once, by whichever
// gateway is free. A team's NATS user needs publish permission on
// sluice.request.<team>.<tier> for its tiers, as on sluice.call: the
// subject names the team, and permissions on subjects decide who may call
// as whom.
//
// # The request
//
// The request's body is a call as on sluice.call (messages.CallRequest);
// its Nats-Msg-Id header, if any, is the call id when the body has none,
// else a new UUID is. A request is answered with one reply:
//
//   - refused before submission, with an error Result (code
//     invalid_request, field "subject" for a subject that is not
//     sluice.request.<team>.<tier> of a valid team token and a tier, or the
//     field messages.DecodeCall names for a call that is not valid JSON or
//     misnames a field; internal when sluice has no configuration yet;
//     queue_full when this instance holds Config.MaxInFlight requests);
//     such a call was never accepted, so no result subject carries it;
//   - otherwise with the call's terminal result, whatever it is: the
//     dispatchers validate and admit it as any other call (an unknown team
//     is forbidden, an unknown pool unknown_model, ...);
//   - or, when no result came by the call's deadline plus
//     Config.ResultGrace, an error Result deadline_exceeded.
//
// An error reply also carries micro's headers Nats-Service-Error (the
// message) and Nats-Service-Error-Code (the HTTP status the gateway would
// answer: 400, 403, 404, 429, 499, 502, 504, 500), so micro-aware clients
// see an error; every reply carries Sluice-Call-Id when the call has an
// id.
//
// A requester that stops waiting does not cancel its call: NATS does not
// tell a responder that its requester gave up, and the call goes on to its
// result on sluice.result.<team>.<id> (and the reply goes nowhere). A
// requester that wants its call canceled when it stops waiting says how
// long it waits in the header Sluice-Cancel-After (a Go duration, such as
// 5s, the --timeout of `nats req`): with no result by then, counted from
// the request's arrival, the endpoint cancels the call on
// sluice.cancel.<team>.<id>, and the call ends canceled (or with the
// result it reached first).
//
// # Stats
//
// micro counts each request (num_requests), and as errors (num_errors,
// last_error) the requests refused before submission: the endpoint
// answers the others asynchronously, after its handler returned, which
// micro's counters do not see. The endpoint's stats "data" counts the
// rest: in_flight, submitted, results by outcome ("ok" or the error
// code), canceled (Sluice-Cancel-After fired) and no_result. The same
// counts go to Prometheus as sluice_requests_total{outcome} and
// sluice_requests_in_flight.
package microsvc

import (
	"context"
	"fmt"
	"maps"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Kinds of sluice services; the micro service name is "sluice-" + kind.
const (
	KindDispatcher = "dispatcher"
	KindExecutor   = "executor"
	KindGateway    = "gateway"
	KindRequests   = "requests"
)

// Descriptions of the kinds, as `nats micro info` shows them.
var descriptions = map[string]string{
	KindDispatcher: "sluice dispatcher: admits calls from SLUICE_CALLS against the shared limits and hands them to regions",
	KindExecutor:   "sluice executor: makes the provider requests of its region and publishes their results",
	KindGateway:    "sluice gateway: the OpenAI- and Anthropic-compatible HTTP API, calling sluice over NATS",
	KindRequests:   "sluice requests: call in one round trip, request sluice.request.<team>.<tier> and get the call's result",
}

// Info describes one service instance.
type Info struct {
	// Kind is one of the Kind constants.
	Kind string
	// Metadata is shown by `nats micro info` (id, region, ...). Empty
	// values are left out.
	Metadata map[string]string
}

// Name is the micro service name of kind.
func Name(kind string) string { return "sluice-" + kind }

// Version is the version micro shows: the build's module version (as
// SemVer, without its "v"), or 0.0.0-dev for a build that has none
// (`go run`, a build outside version control).
var Version = sync.OnceValue(func() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v, ok := strings.CutPrefix(bi.Main.Version, "v"); ok && v != "" {
			return v
		}
	}
	return "0.0.0-dev"
})

// revision is the VCS revision the binary was built from, if known.
var revision = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev != "" && modified == "true" {
		rev += "+dirty"
	}
	return rev
})

// microConfig is the micro configuration of info.
func microConfig(info Info) (micro.Config, error) {
	desc, ok := descriptions[info.Kind]
	if !ok {
		return micro.Config{}, fmt.Errorf("microsvc: unknown kind %q", info.Kind)
	}
	md := map[string]string{}
	for k, v := range info.Metadata {
		if v != "" {
			md[k] = v
		}
	}
	if rev := revision(); rev != "" {
		md["revision"] = rev
	}
	return micro.Config{
		Name:        Name(info.Kind),
		Version:     Version(),
		Description: desc,
		Metadata:    maps.Clone(md),
	}, nil
}

// Register registers info on nc as a micro service without endpoints: it
// answers $SRV.PING, $SRV.INFO and $SRV.STATS until stopped or nc closes.
func Register(nc *nats.Conn, info Info) (micro.Service, error) {
	cfg, err := microConfig(info)
	if err != nil {
		return nil, err
	}
	svc, err := micro.AddService(nc, cfg)
	if err != nil {
		return nil, fmt.Errorf("microsvc: register %s: %w", cfg.Name, err)
	}
	return svc, nil
}

// Wrap registers info on nc now, and returns run, which runs the service
// and stops the registration when run returns: how cmd/sluice and
// services/devstack make a service visible without it knowing.
func Wrap(nc *nats.Conn, info Info, run func(context.Context) error) (func(context.Context) error, error) {
	svc, err := Register(nc, info)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		defer func() { _ = svc.Stop() }()
		return run(ctx)
	}, nil
}

// Alongside returns run, which runs main and side together on ctx, and
// when main returns, ends side and waits for it: how `sluice gateway`
// hosts Requests. The error is main's, else side's.
func Alongside(main, side func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		sideCtx, stop := context.WithCancel(ctx)
		sideErr := make(chan error, 1)
		go func() { sideErr <- side(sideCtx) }()
		err := main(ctx)
		stop()
		if serr := <-sideErr; err == nil {
			err = serr
		}
		return err
	}
}
