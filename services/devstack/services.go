package devstack

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/services/dispatcher"
	"github.com/sluicehq/sluice/services/executor"
	"github.com/sluicehq/sluice/services/microsvc"
	"github.com/sluicehq/sluice/services/tracing"
)

// Service is a dispatcher or executor running on the stack, on its own
// NATS connection.
type Service struct {
	Name   string
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Stop stops the service as a signal would, waits for it to finish, and
// closes its connection.
func (s *Service) Stop() error {
	s.cancel()
	<-s.done
	s.nc.Close()
	return s.err
}

// Kill closes the service's connection first, as a crash would, so
// whatever it held unacknowledged is redelivered after AckWait; then it
// lets the service's goroutines end.
func (s *Service) Kill() {
	s.nc.Close()
	s.cancel()
	<-s.done
}

// Done is closed when the service's Run returns; Err then holds its error.
func (s *Service) Done() <-chan struct{} { return s.done }

// Err is the error Run returned, once Done is closed.
func (s *Service) Err() error {
	<-s.done
	return s.err
}

// StartDispatcher starts a dispatcher named name. tune, if not nil, may
// change its configuration first.
func (s *Stack) StartDispatcher(name string, tune func(*dispatcher.Config)) (*Service, error) {
	cfg := dispatcher.Config{
		ID:             name,
		Shared:         s.Shared,
		Logger:         s.opts.Logger,
		Registerer:     s.opts.Registerer,
		TracerProvider: s.tracerProvider(tracing.ServiceDispatcher),
	}
	if tune != nil {
		tune(&cfg)
	}
	info := &microsvc.Info{Kind: microsvc.KindDispatcher, Metadata: map[string]string{"id": cfg.ID}}
	return s.start("dispatcher "+name, info, func(nc *nats.Conn) (runner, error) {
		return dispatcher.New(nc, cfg)
	})
}

// StartExecutor starts an executor for region. tune, if not nil, may
// change its configuration first.
func (s *Stack) StartExecutor(region string, tune func(*executor.Config)) (*Service, error) {
	cfg := executor.Config{
		Region:         region,
		Shared:         s.Shared,
		Secrets:        s.Secrets,
		Logger:         s.opts.Logger,
		Registerer:     s.opts.Registerer,
		TracerProvider: s.tracerProvider(tracing.ServiceExecutor),
	}
	if tune != nil {
		tune(&cfg)
	}
	info := &microsvc.Info{Kind: microsvc.KindExecutor, Metadata: map[string]string{"region": region}}
	return s.start("executor "+region, info, func(nc *nats.Conn) (runner, error) {
		return executor.New(nc, cfg)
	})
}

type runner interface{ Run(context.Context) error }

// start runs what build makes on a connection of its own, registered with
// NATS micro as info says (read after build; nil: not registered, for a
// service that registers itself).
func (s *Stack) start(name string, info *microsvc.Info, build func(*nats.Conn) (runner, error)) (*Service, error) {
	nc, err := s.Connect("sluice " + name)
	if err != nil {
		return nil, fmt.Errorf("devstack: %s: %w", name, err)
	}
	r, err := build(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	run := r.Run
	if info != nil {
		if run, err = microsvc.Wrap(nc, *info, run); err != nil {
			nc.Close()
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	svc := &Service{Name: name, nc: nc, cancel: cancel, done: make(chan struct{})}
	go func() {
		svc.err = run(ctx)
		close(svc.done)
	}()
	return svc, nil
}
