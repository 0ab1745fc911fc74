package config_test

import (
	"bytes"
	"testing"

	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/internal/config"
)

// FuzzConfigParse checks that Parse never panics and that whatever it
// accepts validates again and survives Marshal → Parse unchanged. Seeds
// are in testdata/fuzz/FuzzConfigParse.
func FuzzConfigParse(f *testing.F) {
	f.Add([]byte(specSubset))
	f.Add([]byte(minimal))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := config.Parse(in)
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned a config with error %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("an accepted config does not validate: %v", err)
		}
		if c.Leaf.MaxTTL.Std() > identity.Ceiling {
			t.Fatalf("accepted leaf.max_ttl %s above the ceiling", c.Leaf.MaxTTL.Std())
		}
		for _, p := range c.Provisioners {
			def, max := c.TTLs(p)
			if def > max || max > identity.Ceiling || def < c.Leaf.MinTTL.Std() {
				t.Fatalf("provisioner %q gets TTLs %s/%s outside [%s, %s]", p.Name, def, max, c.Leaf.MinTTL.Std(), identity.Ceiling)
			}
		}
		b, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		c2, err := config.Parse(b)
		if err != nil {
			t.Fatalf("Parse(Marshal(c)): %v\n%s", err, b)
		}
		b2, err := c2.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, b2) {
			t.Fatalf("Marshal is not stable across Parse:\n%s\n%s", b, b2)
		}
	})
}
