package config

import "fmt"

// CheckRegions refuses a configuration whose deployments name regions that
// no executor serves: served reports, for each region of c.Regions(),
// whether an executor takes its work. The error is a *ValidationError with
// one problem per such deployment, naming its field
// pools.<pool>.deployments[i].region; nil when every region is served.
//
// Calls admitted to a deployment of an unserved region would wait in
// SLUICE_EXEC until an executor of that region starts, so `sluice config
// apply` runs this check before storing (unless --force).
func (c *Config) CheckRegions(served func(region string) bool) error {
	v := &validator{}
	for _, name := range sortedKeys(c.Pools) {
		p := c.Pools[name]
		if p == nil {
			continue
		}
		for i, d := range p.Deployments {
			if d == nil || served(d.Region) {
				continue
			}
			v.add(fmt.Sprintf("pools.%s.deployments[%d].region", name, i),
				"no executor serves region %q: start one (sluice executor --region %s), or apply with --force to store this configuration first", d.Region, d.Region)
		}
	}
	if len(v.problems) > 0 {
		return &ValidationError{Problems: v.problems}
	}
	return nil
}
