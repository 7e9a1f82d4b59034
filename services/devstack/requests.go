package devstack

import (
	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/services/microsvc"
)

// StartRequests starts the request-reply endpoint
// (sluice.request.<team>.<tier>, services/microsvc) on its own NATS
// connection; `sluice dev` runs one whether or not it serves HTTP. tune,
// if not nil, may change its configuration first.
func (s *Stack) StartRequests(tune func(*microsvc.Config)) (*Service, error) {
	cfg := microsvc.Config{
		Shared:     s.Shared,
		Logger:     s.opts.Logger,
		Registerer: s.opts.Registerer,
	}
	if tune != nil {
		tune(&cfg)
	}
	return s.start("requests", nil, func(nc *nats.Conn) (runner, error) {
		return microsvc.New(nc, cfg)
	})
}
