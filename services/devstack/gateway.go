package devstack

import (
	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/services/gateway"
	"github.com/sluicehq/sluice/services/microsvc"
	"github.com/sluicehq/sluice/services/tracing"
)

// StartGateway starts an HTTP gateway on its own NATS connection. It
// listens on 127.0.0.1 and a free port unless tune sets Addr, and returns
// the service and the gateway's base URL ("http://host:port"; the OpenAI
// API is under /v1).
func (s *Stack) StartGateway(tune func(*gateway.Config)) (*Service, string, error) {
	cfg := gateway.Config{
		Addr:           "127.0.0.1:0",
		Shared:         s.Shared,
		Logger:         s.opts.Logger,
		Registerer:     s.opts.Registerer,
		TracerProvider: s.tracerProvider(tracing.ServiceGateway),
	}
	if tune != nil {
		tune(&cfg)
	}
	var url string
	info := &microsvc.Info{Kind: microsvc.KindGateway, Metadata: map[string]string{}}
	svc, err := s.start("gateway", info, func(nc *nats.Conn) (runner, error) {
		g, err := gateway.New(nc, cfg)
		if err != nil {
			return nil, err
		}
		addr, err := g.Listen()
		if err != nil {
			return nil, err
		}
		url = "http://" + addr.String()
		info.Metadata["http"] = url
		return g, nil
	})
	if err != nil {
		return nil, "", err
	}
	return svc, url, nil
}
