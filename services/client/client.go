// Package client is the Go library for calling through sluice: it submits
// calls on sluice.call.<team>.<tier> and awaits their results. It is a thin
// layer over the wire contract in package messages; any NATS client in any
// language can do the same (see the README's Protocol section).
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/results"
)

// refetchEvery is how often Await looks in the results stream while it
// waits, in case the result went by while the connection was down.
const refetchEvery = 5 * time.Second

// Client submits calls and awaits results over one NATS connection.
type Client struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	domain string
}

// Option configures a Client.
type Option func(*Client)

// WithDomain talks to the JetStream of domain: the hub's, for a client
// connected to a leaf node.
func WithDomain(domain string) Option { return func(c *Client) { c.domain = domain } }

// New returns a client that uses nc.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	c := &Client{nc: nc}
	for _, o := range opts {
		o(c)
	}
	var err error
	if c.domain != "" {
		c.js, err = jetstream.NewWithDomain(nc, c.domain)
	} else {
		c.js, err = jetstream.New(nc)
	}
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return c, nil
}

// Submit publishes call for team on tier and returns its id once
// JetStream has accepted it. An empty call.ID is filled with a new UUID.
// The id is also sent as Nats-Msg-Id, so submitting the same call twice
// within the duplicate window runs it once.
//
// Submit refuses a team, tier or id that cannot name a subject.
func (c *Client) Submit(ctx context.Context, team string, tier messages.Tier, call *messages.CallRequest) (string, error) {
	if err := messages.CheckCallAddress(team, tier, call.ID); err != nil {
		return "", fmt.Errorf("client: %w", err)
	}
	if call.ID == "" {
		call.ID = messages.NewCallID()
	}
	data, err := json.Marshal(call)
	if err != nil {
		return "", fmt.Errorf("client: encode call: %w", err)
	}
	msg := &nats.Msg{Subject: messages.CallSubject(team, tier), Data: data, Header: nats.Header{}}
	msg.Header.Set(messages.HeaderMsgID, call.ID)
	if _, err := c.js.PublishMsg(ctx, msg); err != nil {
		return "", fmt.Errorf("client: submit %s: %w", call.ID, err)
	}
	return call.ID, nil
}

// Await returns the result of call id of team, waiting for it until ctx
// ends. It finds results that were published before it was called too, for
// as long as the results stream keeps them.
func (c *Client) Await(ctx context.Context, team, id string) (*messages.Result, error) {
	if !messages.ValidToken(team) || !messages.ValidToken(id) {
		return nil, fmt.Errorf("client: team %q and call id %q must be 1 to 64 letters, digits, '-' or '_'", team, id)
	}
	sub, err := c.nc.SubscribeSync(messages.ResultSubject(team, id))
	if err != nil {
		return nil, fmt.Errorf("client: subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	return c.await(ctx, sub, team, id, true)
}

// Call submits call and waits for its result. The returned error is about
// getting the result (NATS unreachable, ctx done); an answer from sluice,
// success or not, is the Result, whose Err method says which.
func (c *Client) Call(ctx context.Context, team string, tier messages.Tier, call *messages.CallRequest) (*messages.Result, error) {
	if err := messages.CheckCallAddress(team, tier, call.ID); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if call.ID == "" {
		call.ID = messages.NewCallID()
	}
	// Subscribe before submitting, so the result cannot slip past.
	sub, err := c.nc.SubscribeSync(messages.ResultSubject(team, call.ID))
	if err != nil {
		return nil, fmt.Errorf("client: subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	if _, err := c.Submit(ctx, team, tier, call); err != nil {
		return nil, err
	}
	return c.await(ctx, sub, team, call.ID, false)
}

// Cancel tells sluice that nobody waits for call id of team any more: a
// call still waiting is never sent, a provider request under way is
// closed. The call still ends with one result, code canceled (unless it
// finished first). It is one core NATS publish, flushed to the server.
func (c *Client) Cancel(ctx context.Context, team, id string) error {
	if !messages.ValidToken(team) || !messages.ValidToken(id) {
		return fmt.Errorf("client: team %q and call id %q must be 1 to 64 letters, digits, '-' or '_'", team, id)
	}
	if err := c.nc.Publish(messages.CancelSubject(team, id), nil); err != nil {
		return fmt.Errorf("client: cancel %s: %w", id, err)
	}
	if err := c.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("client: cancel %s: %w", id, err)
	}
	return nil
}

// await waits for the result on sub, looking in the results stream first
// if fetch is set and again every refetchEvery. A failed look is not an
// error: the subscription may still deliver.
func (c *Client) await(ctx context.Context, sub *nats.Subscription, team, id string, fetch bool) (*messages.Result, error) {
	for {
		if fetch {
			if r, err := results.FetchDirect(ctx, c.nc, c.domain, team, id); err == nil {
				return r, nil
			}
		}
		fetch = true
		waitCtx, cancel := context.WithTimeout(ctx, refetchEvery)
		msg, err := sub.NextMsgWithContext(waitCtx)
		cancel()
		switch {
		case err == nil:
			var r messages.Result
			if err := json.Unmarshal(msg.Data, &r); err != nil {
				return nil, fmt.Errorf("client: decode result %s: %w", id, err)
			}
			return &r, nil
		case ctx.Err() != nil:
			return nil, fmt.Errorf("client: await %s: %w", id, ctx.Err())
		case errors.Is(err, context.DeadlineExceeded):
			// Look in the stream again.
		default:
			return nil, fmt.Errorf("client: await %s: %w", id, err)
		}
	}
}
