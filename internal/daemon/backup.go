package daemon

// agentca backup: a consistent copy of the running CA's store, streamed
// over the admin socket (GET /admin/v1/backup; never on the HTTPS
// listener). bbolt: the file as of one read transaction (bbolt's
// Tx.WriteTo), while issuance goes on; etcd: every key under the CA's
// prefix at one revision (store/etcd Backup).

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/etcd"
)

// BackupPath is the admin socket's backup endpoint.
const BackupPath = "/admin/v1/backup"

// Backup trailer: set to "ok" once the whole copy was written, so a
// client never keeps a copy cut short.
const (
	BackupKindHeader  = "Agentca-Backup-Kind"
	BackupDoneTrailer = "Agentca-Backup-Done"
	BackupKindBbolt   = "bbolt"
	BackupKindEtcd    = "etcd"
)

// backuper is a store that can copy itself (store/bolt).
type backuper interface {
	Backup(ctx context.Context, w io.Writer) (int64, error)
}

// withBackup serves BackupPath for st, and everything else with admin.
func withBackup(admin http.Handler, st store.Store, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", admin)
	mux.HandleFunc(BackupPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, `{"error":"method_not_allowed","message":"use GET"}`, http.StatusMethodNotAllowed)
			return
		}
		b, ok := st.(backuper)
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotImplemented)
			_, _ = io.WriteString(w, `{"error":"not_implemented","message":"this store cannot be backed up through the daemon"}`)
			return
		}
		// A large file takes longer than the admin listener's write
		// timeout.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		w.Header().Set("Content-Type", "application/octet-stream")
		kind := BackupKindBbolt
		if _, ok := st.(*etcd.Store); ok {
			kind = BackupKindEtcd
		}
		w.Header().Set(BackupKindHeader, kind)
		w.Header().Set("Trailer", BackupDoneTrailer)
		w.WriteHeader(http.StatusOK)
		n, err := b.Backup(r.Context(), w)
		if err != nil {
			log.Error("backup failed", "bytes", n, "err", err)
			return
		}
		w.Header().Set(BackupDoneTrailer, "ok "+strconv.FormatInt(n, 10))
		log.Info("audit: store backed up", "audit", "backup", "bytes", n)
	})
	return mux
}
