package limiter_test

import (
	"testing"

	"github.com/sluicehq/sluice/services/limiter"
	"github.com/sluicehq/sluice/services/limiter/limitertest"
)

func TestMemoryContract(t *testing.T) {
	limitertest.Run(t, func(t *testing.T, clock limiter.Clock) func() limiter.Limiter {
		// One Memory is one process's state: every "instance" shares it.
		m := limiter.NewMemory(clock)
		return func() limiter.Limiter { return m }
	})
}

func TestMemorySchedulerContract(t *testing.T) {
	limitertest.RunScheduler(t, func(t *testing.T, clock limiter.Clock) func() limiter.Scheduler {
		m := limiter.NewMemory(clock)
		return func() limiter.Scheduler { return m }
	})
}
