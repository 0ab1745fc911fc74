package config_test

import (
	"strings"
	"testing"

	"github.com/agentca/agentca/internal/config"
)

func TestKeysValidate(t *testing.T) {
	const kms = "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=agentca?pin-value=1234"
	for _, tt := range []struct {
		name string
		keys config.Keys
		want string // "" means valid
	}{
		{"absent", config.Keys{}, ""},
		{"files", config.Keys{Issuing: "keys/other.key", Log: "/abs/log.key"}, ""},
		{"kms", config.Keys{KMS: kms, Root: "pkcs11:id=01;object=r", Issuing: "pkcs11:id=02;object=i",
			OCSP: "pkcs11:id=03;object=o", Log: "pkcs11:id=04;object=l"}, ""},
		{"kms and a file", config.Keys{KMS: kms, Issuing: "pkcs11:id=02;object=i"}, ""},
		{"bad kms", config.Keys{KMS: "awskms:key-id=1"}, "keys.kms"},
		{"kms key without kms", config.Keys{OCSP: "pkcs11:id=03;object=o"}, "keys.ocsp"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := config.Default("example.org", "127.0.0.1:8443", "127.0.0.1:8080")
			c.Keys = tt.keys
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("want an error naming %s, got %v", tt.want, err)
			}
			b, err := c.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if (tt.keys == config.Keys{}) == strings.Contains(string(b), `"keys"`) {
				t.Errorf("keys in the marshalled config: %s", b)
			}
		})
	}
}
