package api_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store/bolt"
)

// TestStoreRoles: a Store that only reads certificates needs its Revoker
// and ReplayKeys given; New names the one missing rather than serve
// handlers without it, and takes the roles from their own fields.
func TestStoreRoles(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reads := struct{ api.CertReader }{st} // the store narrowed to one role
	opts := api.Options{Authority: &ca.Authority{}, Store: reads, Trust: &api.Trust{},
		Provisioners: map[string]*api.Provisioner{"p": {}}}
	for _, tc := range []struct {
		name       string
		revoker    api.Revoker
		replayKeys api.ReplayKeys
		want       string
	}{
		{"neither", nil, nil, "Revoker is required"},
		{"no replay keys", st, nil, "ReplayKeys is required"},
		{"no revoker", nil, st, "Revoker is required"},
		{"both given", st, st, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts
			o.Revoker, o.ReplayKeys = tc.revoker, tc.replayKeys
			_, err := api.New(o)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New with every role given: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
