//go:build linux

package test

import "time"

// faultJitter is admission.jitter in the fault stacks' configuration:
// four fault stacks and the -race test process share two cores in CI, and
// their requests reach the provider later after their send times than on
// an idle machine (see arrivals_test.go).
const faultJitter = 50 * time.Millisecond
