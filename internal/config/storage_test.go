package config_test

import (
	"strings"
	"testing"

	"github.com/agentca/agentca/internal/config"
)

func withStorage(storage string) []byte {
	return []byte(`{"trust_domain": "example.org",
  "listen": {"https": "127.0.0.1:8443", "http": "127.0.0.1:8080"},
  "storage": ` + storage + `,
  "provisioners": [{"type": "join-token", "name": "join"}]}`)
}

func TestParseEtcdStorage(t *testing.T) {
	c, err := config.Parse(withStorage(`{"type": "etcd", "endpoints": ["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
	  "ca_file": "etcd-ca.pem", "cert_file": "etcd.pem", "key_file": "etcd.key", "username": "agentca", "password_file": "etcd.pass",
	  "request_timeout": "3s", "max_txn_ops": 1024}`))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Storage
	if s.Type != "etcd" || len(s.Endpoints) != 2 || s.Prefix != config.DefaultEtcdPrefix || s.Path != "" || s.CAFile != "etcd-ca.pem" ||
		s.Username != "agentca" || s.RequestTimeout.Std().Seconds() != 3 || s.MaxTxnOps != 1024 {
		t.Fatalf("storage = %+v", s)
	}
}

func TestParseEtcdStorageRefuses(t *testing.T) {
	for _, tt := range []struct{ storage, field string }{
		{`{"type": "etcd"}`, "storage.endpoints"},
		{`{"type": "etcd", "endpoints": ["10.0.0.1:2379"]}`, "storage.endpoints"},
		{`{"type": "etcd", "endpoints": ["ftp://10.0.0.1:2379"]}`, "storage.endpoints"},
		{`{"type": "etcd", "endpoints": ["http://e:2379"], "prefix": "agentca"}`, "storage.prefix"},
		{`{"type": "etcd", "endpoints": ["http://e:2379"], "prefix": "/agentca/"}`, "storage.prefix"},
		{`{"type": "etcd", "endpoints": ["http://e:2379"], "prefix": "/a b"}`, "storage.prefix"},
		{`{"type": "etcd", "endpoints": ["http://e:2379"], "cert_file": "c.pem"}`, "storage.cert_file"},
		{`{"type": "etcd", "endpoints": ["http://e:2379"], "username": "u"}`, "storage.username"},
		{`{"type": "etcd", "endpoints": ["http://e:2379"], "request_timeout": "1ms"}`, "storage.request_timeout"},
		{`{"type": "etcd", "endpoints": ["http://e:2379"], "max_txn_ops": 3}`, "storage.max_txn_ops"},
		{`{"type": "etcd", "endpoints": ["http://e:2379"], "max_txn_ops": 95}`, "storage.max_txn_ops"},
		{`{"type": "etcd", "endpoints": ["http://e:2379"], "path": "agentca.db"}`, "storage.path"},
		{`{"type": "etcd", "endpoints": ["http://e:2379"], "password": "x"}`, "password"},
		{`{"type": "bbolt", "endpoints": ["http://e:2379"]}`, "storage"},
		{`{"type": "consul"}`, "storage.type"},
	} {
		_, err := config.Parse(withStorage(tt.storage))
		if err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: err = %v, want one naming %s", tt.storage, err, tt.field)
		}
	}
}

// 96 operations, the most one issuance may need, is the smallest
// max_txn_ops accepted.
func TestStorageMaxTxnOpsMinimum(t *testing.T) {
	c, err := config.Parse(withStorage(`{"type": "etcd", "endpoints": ["http://e:2379"], "max_txn_ops": 96}`))
	if err != nil || c.Storage.MaxTxnOps != 96 {
		t.Fatalf("max_txn_ops 96: %v", err)
	}
}
