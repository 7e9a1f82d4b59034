//go:build !unix

package bench

import "time"

// processCPU is not measured here; the report then shows no CPU use.
func processCPU() time.Duration { return 0 }
