package etcd_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/agentca/agentca/store/etcd"
)

// FuzzReadBackup: ReadBackup reads a backup file an operator hands to
// agentca store restore. Whatever the bytes, it returns a header or an
// error, never panics, reports only keys under the prefix, and accepts
// only a valid header.
func FuzzReadBackup(f *testing.F) {
	f.Add([]byte(`{"agentca_backup":"etcd","prefix":"/a","revision":7}
{"k":"/schema","v":"MQ=="}
{"k":"/store_id","v":"YWJj"}
{"end":true,"keys":2}
`))
	f.Add([]byte(`{"agentca_backup":"etcd","prefix":"/a","revision":7}
{"k":"/schema","v":"MQ=="}
`))
	f.Add([]byte(`{"agentca_backup":"etcd","prefix":"a/","revision":7}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := etcd.ReadBackup(bytes.NewReader(data), func(k string, v []byte) error {
			if !strings.HasPrefix(k, "/") {
				t.Fatalf("key %q outside the prefix", k)
			}
			return nil
		})
		if err == nil && (h == nil || h.Kind != "etcd" || etcd.ValidatePrefix(h.Prefix) != nil) {
			t.Fatalf("accepted header %+v", h)
		}
	})
}
