package dispatcher

import (
	"container/heap"
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/health"
	"github.com/sluicehq/sluice/services/limiter"
)

// The simulator runs any number of dispatchers, each a scheduler as the
// harness in scheduler_test.go drives one, on one manual clock, sharing
// one limiter.Memory (buckets and send schedules) through their own real
// Leases and Pacer, as dispatchers share SLUICE_LIMITER and
// SLUICE_SCHEDULE. Around them it plays what NATS, JetStream, the
// executors and the providers do:
//
//   - calls arrive by a seeded pattern per team (steady, Poisson or in
//     bursts), and each is handed to one live dispatcher by a seeded
//     choice, as a JetStream consumer hands a message to whichever
//     dispatcher pulls;
//   - every stateEvery, and early when one asks (a team starved), each
//     dispatcher's state() reaches the others' notePeer, as announcements
//     do over NATS;
//   - every SettleInterval each dispatcher expires its leases and writes
//     its settlements, as settleLoop does;
//   - admitted work reaches a simulated provider per deployment at its
//     sendAt plus a seeded path delay; the provider enforces its own limit
//     (a sliding 60 s window, fixed one-second windows, a token bucket,
//     or sliding 1 s and 60 s windows of a key shared with an outside
//     user), independently of sluice's algorithm, and answers after a
//     seeded latency, sometimes with a 5xx or a timeout, and with a 429
//     when over its limit;
//   - each attempt is reported to the dispatcher that admitted it
//     (noteDone), and a 429, 5xx or timeout becomes a retry ticket
//     (Attempt+1) offered after a backoff to a live dispatcher, as an
//     executor would, until retry.max_attempts;
//   - a dispatcher may crash: what it held waiting (queued or posted) is
//     redelivered to the others after AckWait, its leases are lost, and
//     the reports of its attempts go nowhere; it may come back under a
//     new id.
//
// A dispatcher runs a pass when the last one's wait is up, a millisecond
// after a call is posted to it, and a few after an attempt report (see
// simReportCoalesce). Left out: the health the executors learn (429s
// lower no limits here, nothing cools down), max_in_flight slots, late
// work handed back, stalled regions, cancellations, and the KV's latency
// and conflicts (limiter.Memory answers at once).
//
// Everything random draws from one seeded source, dispatchers' routing
// included, so a seed replays exactly.
type sim struct {
	t    testing.TB
	seed uint64
	rng  *rand.Rand
	now  time.Time
	cfg  *config.Config
	live *config.Live
	mem  *limiter.Memory

	events simEvents
	seq    uint64
	nodes  []*simNode
	// providers by deployment id.
	providers map[string]*simProvider
	pathDelay time.Duration
	// failure odds of an attempt the provider accepts.
	p5xx, pTimeout float64
	// spread picks the dispatcher a call goes to, among the live ones.
	spread func(team string, live []*simNode) *simNode
	// onAdmit, when set, is told of every admission as it is decided.
	onAdmit func(simAdmission)

	// What happened.
	admissions  []simAdmission
	attempts    map[string]int // admissions by attempt key
	terminal    map[string]int // ends by call id: succeeded, answered or given up
	answers     map[messages.Code]int
	calls       int
	outcomes    map[messages.Outcome]int
	tooMany     map[string]int // 429s by deployment
	sent        map[string]int // requests that reached each provider
	crashes     int
	passes      int
	redelivered int
	nextID      int
}

type simNode struct {
	id     string
	d      *Dispatcher
	got    *decisions
	alive  bool
	passAt time.Time // zero: no pass scheduled
	// lastAnnounce is when it last announced; urgentAt when an early
	// announcement is due (zero: none).
	lastAnnounce, urgentAt time.Time
}

// simAdmission is one admission as the simulator saw it.
type simAdmission struct {
	at      time.Time
	node    string
	call    string
	attempt string
	team    string
	tier    messages.Tier
	dep     string
	sendAt  time.Time
	retry   bool
}

type simEvent struct {
	at  time.Time
	seq uint64
	fn  func()
}

type simEvents []simEvent

func (h simEvents) Len() int { return len(h) }
func (h simEvents) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h simEvents) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *simEvents) Push(x any)   { *h = append(*h, x.(simEvent)) }
func (h *simEvents) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// at schedules fn at t (now when t is past).
func (s *sim) at(t time.Time, fn func()) {
	if t.Before(s.now) {
		t = s.now
	}
	s.seq++
	heap.Push(&s.events, simEvent{t, s.seq, fn})
}

// simCoalesce is how soon a pass follows an event posted to a
// dispatcher: what is posted while a pass runs waits for the next one,
// which the scheduler's loop starts at once, so a real dispatcher too
// takes events that come close together in one pass.
const simCoalesce = minPassWait

// simReportCoalesce is how soon a pass follows an attempt report. A report
// changes what a pass decides only through the breakers and in-flight
// slots (no simulated deployment has max_in_flight), so the simulator
// lets reports that come within a few milliseconds of each
// other share a pass, where a real dispatcher might run one for each: it
// makes the simulation several times cheaper, and moves when breakers
// learn by at most this much.
const simReportCoalesce = 5 * time.Millisecond

// simStart is the simulated clock's origin.
var simStart = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

// newSim starts dispatchers dispatchers under the configuration yaml.
func newSim(t testing.TB, seed uint64, yaml string, dispatchers int) *sim {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{
		t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0x511ce)), now: simStart, cfg: cfg, live: config.NewLive(cfg),
		providers: map[string]*simProvider{}, pathDelay: 4 * time.Millisecond,
		attempts: map[string]int{}, terminal: map[string]int{}, answers: map[messages.Code]int{},
		outcomes: map[messages.Outcome]int{}, tooMany: map[string]int{}, sent: map[string]int{},
	}
	s.mem = limiter.NewMemory(s.clock)
	s.spread = func(_ string, live []*simNode) *simNode { return live[s.rng.IntN(len(live))] }
	for _, pool := range cfg.Pools {
		for _, dep := range pool.Deployments {
			s.providers[dep.ID] = &simProvider{kind: providerFor(dep), rpm: float64(dep.RPM), burst: cfg.Admission.Burst}
		}
	}
	for i := range dispatchers {
		s.start(fmt.Sprintf("d%d", i+1))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("simulator seed %d failed; replay it with that seed", seed)
		}
	})
	return s
}

func (s *sim) clock() time.Time { return s.now }

// providerFor is the provider a deployment's windows describe: [] a token
// bucket, [1m] a sliding minute, [1s] fixed seconds, else sliding 1 s and
// 60 s windows.
func providerFor(dep *config.Deployment) providerKind {
	ws := dep.EnforcedWindows()
	switch {
	case len(ws) == 0:
		return providerBucket
	case len(ws) == 1 && ws[0] == time.Minute:
		return providerSliding60
	case len(ws) == 1 && ws[0] == time.Second:
		return providerFixed1s
	}
	return providerSliding
}

// start brings a dispatcher up under id.
func (s *sim) start(id string) *simNode {
	c := Config{ID: id, Shared: s.live, Clock: s.clock}
	if err := c.defaults(); err != nil {
		s.t.Fatal(err)
	}
	n := &simNode{id: id, d: newDispatcher(c), got: &decisions{}, alive: true}
	n.d.shareCapacity(s.mem, s.mem, s.cfg)
	n.d.health = health.NewStore(nil)
	n.d.decide = n.got
	n.d.rng = rand.New(rand.NewPCG(s.seed, hashOf(id)))
	s.nodes = append(s.nodes, n)
	// Announcements tick from a seeded phase, settlements every
	// SettleInterval.
	phase := time.Duration(s.rng.Int64N(int64(stateEvery)))
	var tick func()
	tick = func() {
		if !n.alive {
			return
		}
		s.announce(n)
		s.at(s.now.Add(stateEvery), tick)
	}
	s.at(s.now.Add(phase), tick)
	var settle func()
	settle = func() {
		if !n.alive {
			return
		}
		ctx := context.Background()
		_ = n.d.leases.Expire(ctx)
		n.d.flushSettlements(ctx)
		s.woken(n)
		s.at(s.now.Add(n.d.cfg.SettleInterval), settle)
	}
	s.at(s.now.Add(n.d.cfg.SettleInterval), settle)
	return n
}

func hashOf(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}

// announce feeds n's state to every other live dispatcher.
func (s *sim) announce(n *simNode) {
	st := n.d.state()
	n.lastAnnounce = s.now
	for _, o := range s.nodes {
		if o != n && o.alive {
			o.d.notePeer(st)
		}
	}
}

// live are the dispatchers up now.
func (s *sim) up() []*simNode {
	var out []*simNode
	for _, n := range s.nodes {
		if n.alive {
			out = append(out, n)
		}
	}
	return out
}

// schedulePass makes n run a pass at t, unless one comes sooner.
func (s *sim) schedulePass(n *simNode, t time.Time) {
	if t.Before(s.now) {
		t = s.now
	}
	if !n.passAt.IsZero() && !n.passAt.After(t) {
		return
	}
	n.passAt = t
	s.at(t, func() {
		if n.alive && n.passAt.Equal(t) {
			n.passAt = time.Time{}
			s.pass(n)
		}
	})
}

// woken runs a pass now if something poked n's scheduler.
func (s *sim) woken(n *simNode) {
	select {
	case <-n.d.wake:
		s.schedulePass(n, s.now)
	default:
	}
}

// pass applies what was posted to n, runs one pass, and carries out what
// it decided.
func (s *sim) pass(n *simNode) {
	select { // the pass is the wake-up
	case <-n.d.wake:
	default:
	}
	s.passes++
	n.d.applyEvents()
	wait := n.d.pass(context.Background())
	adm, ans := n.got.admissions, n.got.answers
	n.got.admissions, n.got.answers = nil, nil
	for _, a := range adm {
		s.admitted(n, a)
	}
	for _, a := range ans {
		s.end(a.w.ticket.Call.ID)
		s.answers[a.err.Code]++
	}
	s.schedulePass(n, s.now.Add(wait))
	select {
	case <-n.d.demand.urgent:
		if n.urgentAt.IsZero() {
			n.urgentAt = n.lastAnnounce.Add(urgentGap)
			if n.urgentAt.Before(s.now) {
				n.urgentAt = s.now
			}
			s.at(n.urgentAt, func() {
				n.urgentAt = time.Time{}
				if n.alive {
					s.announce(n)
				}
			})
		}
	default:
	}
}

func (s *sim) end(call string) { s.terminal[call]++ }

// offer hands t to a live dispatcher (fresh: a new call, not a retry).
func (s *sim) offer(t messages.Ticket, tokens int64, fresh bool) {
	live := s.up()
	if len(live) == 0 {
		// No dispatcher pulls: JetStream keeps it; try again later.
		s.at(s.now.Add(time.Second), func() { s.offer(t, tokens, fresh) })
		return
	}
	n := s.spread(t.Team, live)
	n.d.post(callOffered{&waiting{ticket: t, need: limiter.Amount{Requests: 1, Tokens: float64(tokens)}, since: s.now, touched: s.now}, fresh})
	s.schedulePass(n, s.now.Add(simCoalesce))
}

// newCall offers a fresh call of team in tier with the given time to its
// deadline, and returns its id.
func (s *sim) newCall(team string, tier messages.Tier, tokens int64, timeout time.Duration) string {
	s.nextID++
	s.calls++
	id := fmt.Sprintf("%s-%d", team, s.nextID)
	t := messages.Ticket{
		Team: team, Tier: tier, AcceptedAt: s.now, Attempt: 1, Deadline: s.now.Add(timeout),
		Call: messages.CallRequest{ID: id, Model: "m", Endpoint: messages.EndpointChatCompletions},
	}
	s.offer(t, tokens, true)
	return id
}

// arrivals is how a team's calls come.
type arrivals struct {
	team    string
	tier    messages.Tier
	pattern string  // "steady", "poisson" or "bursty"
	rate    float64 // calls per second, on average
	burst   int     // mean calls per burst, for "bursty"
	prefill int     // calls offered at once at the start
	tokens  int64
	timeout time.Duration
	// from and until bound when calls come, from the start (until zero:
	// the whole run).
	from, until time.Duration
}

// arrive schedules a's calls.
func (s *sim) arrive(a arrivals) {
	if a.timeout == 0 {
		a.timeout = 2 * time.Hour
	}
	if a.tokens == 0 {
		a.tokens = 100
	}
	start := simStart.Add(a.from)
	s.at(start, func() {
		for range a.prefill {
			s.newCall(a.team, a.tier, a.tokens, a.timeout)
		}
	})
	if a.rate <= 0 {
		return
	}
	var next func()
	gap := func() time.Duration {
		switch a.pattern {
		case "steady":
			return time.Duration(float64(time.Second) / a.rate)
		case "bursty":
			return time.Duration(s.rng.ExpFloat64() * float64(a.burst) / a.rate * float64(time.Second))
		}
		return time.Duration(s.rng.ExpFloat64() / a.rate * float64(time.Second))
	}
	next = func() {
		if a.until > 0 && s.now.Sub(simStart) >= a.until {
			return
		}
		n := 1
		if a.pattern == "bursty" {
			n = 1 + int(s.rng.ExpFloat64()*float64(a.burst-1))
		}
		for range n {
			s.newCall(a.team, a.tier, a.tokens, a.timeout)
		}
		s.at(s.now.Add(gap()), next)
	}
	s.at(start.Add(gap()), next)
}

// admitted carries an admission out: its work reaches the provider at its
// send time plus the path, and the provider's answer comes back.
func (s *sim) admitted(n *simNode, a admission) {
	t := a.w.ticket
	key := attemptKey(t.Call.ID, t.Attempt, t.Admission)
	s.attempts[key]++
	rec := simAdmission{at: s.now, node: n.id, call: t.Call.ID, attempt: key, team: t.Team, tier: t.Tier, dep: a.dep.ID, sendAt: a.sendAt, retry: t.Attempt > 1}
	s.admissions = append(s.admissions, rec)
	if s.onAdmit != nil {
		s.onAdmit(rec)
	}
	reserved := int64(a.w.need.Tokens)
	arrive := a.sendAt.Add(time.Duration(s.rng.Int64N(int64(s.pathDelay) + 1)))
	dep := a.dep
	received := s.now.Add(time.Millisecond) // the work reached an executor
	s.at(arrive, func() {
		p := s.providers[dep.ID]
		s.sent[dep.ID]++
		done := messages.AttemptDone{CallID: t.Call.ID, Attempt: t.Attempt, Admission: t.Admission, Deployment: dep.ID,
			ReservedTokens: reserved, UsedTokens: -1, ReceivedAt: received, SentAt: s.now}
		var latency time.Duration
		switch r := s.rng.Float64(); {
		case !p.accept(s.now):
			done.Outcome, done.Status = messages.OutcomeRateLimited, 429
			latency = time.Duration(20+s.rng.IntN(80)) * time.Millisecond
			s.tooMany[dep.ID]++
		case r < s.p5xx:
			done.Outcome, done.Status = messages.OutcomeUnavailable, 503
			latency = time.Duration(50+s.rng.IntN(500)) * time.Millisecond
		case r < s.p5xx+s.pTimeout:
			done.Outcome = messages.OutcomeTimeout
			latency = s.cfg.Retry.AttemptTimeout
		default:
			done.Outcome, done.Status = messages.OutcomeOK, 200
			done.UsedTokens = reserved * int64(30+s.rng.IntN(71)) / 100
			latency = time.Duration(200+s.rng.IntN(2800)) * time.Millisecond
		}
		s.at(s.now.Add(latency), func() { s.reported(n, t, dep.ID, done) })
	})
}

// reported takes an attempt's end as its executor would: it reports to
// the dispatcher that admitted it (lost if that one is down), and ends
// the call or offers its retry.
func (s *sim) reported(n *simNode, t messages.Ticket, dep string, done messages.AttemptDone) {
	s.outcomes[done.Outcome]++
	if n.alive {
		n.d.noteDone(done)
		s.schedulePass(n, s.now.Add(simReportCoalesce)) // the report was posted
	}
	retryable := done.Outcome == messages.OutcomeRateLimited || done.Outcome.Failed()
	if !retryable || t.Attempt >= s.cfg.Retry.MaxAttempts || !s.now.Before(t.Deadline) {
		s.end(t.Call.ID)
		return
	}
	next := t
	next.Attempt++
	next.Admission = 0
	next.LastDeployment = dep
	next.LastError = &messages.Error{Code: messages.CodeProviderError, Message: string(done.Outcome)}
	if done.Outcome == messages.OutcomeRateLimited {
		next.LastError.Code = messages.CodeRateLimited
	}
	backoff := min(s.cfg.Retry.MaxDelay, s.cfg.Retry.BaseDelay<<(t.Attempt-1))
	wait := time.Duration(s.rng.Int64N(int64(backoff) + 1))
	s.at(s.now.Add(wait), func() { s.offer(next, 100, false) })
}

// crash takes n down at once: its leases are lost with it, its reports go
// nowhere, and the calls it held (queued, or posted and not yet applied)
// go to the others after AckWait, as JetStream redelivers them. When
// restart is positive, it comes back that much later under a new id.
func (s *sim) crash(n *simNode, restart time.Duration) {
	n.alive = false
	s.crashes++
	var held []*waiting
	held = append(held, n.d.queue.all()...)
	for _, e := range n.d.inbox.take() {
		if o, ok := e.(callOffered); ok {
			held = append(held, o.w)
		}
	}
	s.redelivered += len(held)
	s.at(s.now.Add(n.d.cfg.AckWait), func() {
		for _, w := range held {
			s.offer(w.ticket, int64(w.need.Tokens), w.ticket.Attempt == 1)
		}
	})
	if restart > 0 {
		s.at(s.now.Add(restart), func() { s.start(fmt.Sprintf("%s-r%d", n.id, s.crashes)) })
	}
}

// run runs the simulation for d of simulated time, or until stop reports
// true (checked after every event).
func (s *sim) run(d time.Duration, stop func() bool) {
	end := s.now.Add(d)
	for s.events.Len() > 0 {
		e := heap.Pop(&s.events).(simEvent)
		if e.at.After(end) {
			heap.Push(&s.events, e)
			s.now = end
			return
		}
		s.now = e.at
		e.fn()
		if stop != nil && stop() {
			return
		}
	}
	s.now = end
}

// providerKind is what a simulated provider enforces.
type providerKind int

const (
	providerSliding60 providerKind = iota // at most rpm requests in any 60 s
	providerFixed1s                       // at most rpm/60 in each calendar second
	providerBucket                        // a token bucket of rpm, admission.burst deep
	providerSliding                       // ceil(rpm/60) in any 1 s, rpm in any 60 s
)

func (k providerKind) String() string {
	return [...]string{"sliding 60s window", "fixed 1s windows", "token bucket", "sliding 1s and 60s windows"}[k]
}

// simProvider enforces its limit on the requests it accepts; a refused
// request does not count.
type simProvider struct {
	kind providerKind
	rpm  float64
	// burst is the token bucket's depth in time at its rate.
	burst time.Duration
	// recent are the accepted requests' arrival times, oldest first, from
	// head on.
	recent []time.Time
	head   int
	// second and inSecond count the current calendar second's requests.
	second   int64
	inSecond int
	// level and at are the token bucket's.
	level float64
	at    time.Time
	// outside, when positive, is the rate (per minute) at which an outside
	// user of the same key sends, evenly; outsideAt its next request.
	outside   float64
	outsideAt time.Time
	// outsideSent and outsideRefused count its requests.
	outsideSent, outsideRefused int
}

func (p *simProvider) count(since time.Time) int {
	r := p.recent[p.head:]
	return len(r) - sort.Search(len(r), func(i int) bool { return r[i].After(since) })
}

// accept reports whether a request arriving at now fits, and counts it.
func (p *simProvider) accept(now time.Time) bool {
	if p.outside > 0 {
		gap := time.Duration(float64(time.Minute) / p.outside)
		if p.outsideAt.IsZero() {
			p.outsideAt = simStart
		}
		for p.outsideAt.Before(now) {
			p.outsideSent++
			if !p.take(p.outsideAt) {
				p.outsideRefused++
			}
			p.outsideAt = p.outsideAt.Add(gap)
		}
	}
	return p.take(now)
}

func (p *simProvider) take(now time.Time) bool {
	// Keep a minute of history.
	for p.head < len(p.recent) && now.Sub(p.recent[p.head]) >= time.Minute {
		p.head++
	}
	if p.head > 4096 && p.head > len(p.recent)/2 {
		p.recent = append(p.recent[:0], p.recent[p.head:]...)
		p.head = 0
	}
	switch p.kind {
	case providerSliding60:
		if float64(len(p.recent)-p.head) >= p.rpm {
			return false
		}
	case providerFixed1s:
		if sec := now.Unix(); sec != p.second {
			p.second, p.inSecond = sec, 0
		}
		if float64(p.inSecond) >= math.Floor(p.rpm/60) {
			return false
		}
		p.inSecond++
	case providerBucket:
		depth := p.rpm / 60 * p.burst.Seconds()
		if p.at.IsZero() {
			p.level, p.at = depth, now
		}
		p.level = min(depth, p.level+now.Sub(p.at).Seconds()*p.rpm/60)
		p.at = now
		if p.level < 1 {
			return false
		}
		p.level--
	case providerSliding:
		if float64(len(p.recent)-p.head) >= p.rpm || float64(p.count(now.Add(-time.Second))) >= math.Ceil(p.rpm/60) {
			return false
		}
	}
	p.recent = append(p.recent, now)
	return true
}
