package daemon

// SPIFFE federation: the foreign trust domains of agentca.json, fetched
// and kept fresh by package federation, their bundles served at
// /v1/bundle?trust_domain=… (docs/federation.md).

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/agentca/agentca/federation"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
)

// startFederation loads the federated trust domains' bundles (stored, or
// the bootstrap files) and follows their bundle endpoints until stop is
// called. With no federation configured it returns a nil source.
func startFederation(ctx context.Context, dir string, cfg *config.Config, st store.Store, reg prometheus.Registerer,
	log *slog.Logger) (src spiffebundle.Source, stop func(), err error) {
	if len(cfg.Federation) == 0 {
		return nil, func() {}, nil
	}
	fst, ok := st.(federation.Store)
	if !ok {
		return nil, nil, fmt.Errorf("federation: the %s store cannot keep federated bundles", cfg.Storage.Type)
	}
	f, err := federation.New(ctx, federation.Options{Dir: dir, Domains: cfg.Federation, Store: fst, Registry: reg, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	fctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { f.Run(fctx) })
	log.Info("federation", "trust_domains", len(cfg.Federation))
	return f, func() { cancel(); wg.Wait() }, nil
}
