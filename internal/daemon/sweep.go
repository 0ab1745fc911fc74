package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/agentca/agentca/store"
)

const (
	// sweepEvery is how often the daemon removes expired records.
	sweepEvery = time.Minute
	// sweepBatch bounds the records one store transaction removes, so a
	// sweep never holds the committer for long.
	sweepBatch = 500
)

// sweeper is the part of store.Store that retention needs.
type sweeper interface {
	Sweep(ctx context.Context, before time.Time, limit int) (store.Swept, error)
}

// sweepLoop removes, every sweepEvery until ctx ends, the certificates and
// join tokens that expired more than retention ago (storage.retention).
func sweepLoop(ctx context.Context, st sweeper, retention time.Duration, log *slog.Logger) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		if _, err := sweepOnce(ctx, st, time.Now().Add(-retention), sweepBatch, log); err != nil && ctx.Err() == nil {
			log.Error("retention sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweepOnce sweeps in batches of batch until nothing expired before
// before is left, and logs what it removed.
func sweepOnce(ctx context.Context, st sweeper, before time.Time, batch int, log *slog.Logger) (store.Swept, error) {
	var total store.Swept
	for ctx.Err() == nil {
		sw, err := st.Sweep(ctx, before, batch)
		total.Certificates += sw.Certificates
		total.JoinTokens += sw.JoinTokens
		if err != nil || !sw.More {
			if total.Certificates+total.JoinTokens > 0 {
				log.Info("retention sweep", "certificates", total.Certificates, "join_tokens", total.JoinTokens,
					"expired_before", before.UTC().Format(time.RFC3339))
			}
			return total, err
		}
	}
	return total, ctx.Err()
}
