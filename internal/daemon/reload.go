package daemon

import (
	"bytes"
	"encoding/json"
	"slices"

	"github.com/agentca/agentca/internal/config"
)

// reloaded are the agentca.json sections a SIGHUP applies: provisioners
// and admins (reloadOnHUP), the policy (reloadPolicyOnHUP). leaf's
// default_ttl and max_ttl apply too, through the provisioners' limits.
var reloaded = []string{"provisioners", "admins", "policy"}

// needRestart names the settings of now that differ from started and that
// a SIGHUP does not apply, as agentca.json spells them ("listen",
// "leaf.min_ttl").
func needRestart(started, now *config.Config) []string {
	a, b := sections(started), sections(now)
	var out []string
	for name, v := range b {
		if slices.Contains(reloaded, name) || name == "leaf" {
			continue
		}
		if !bytes.Equal(a[name], v) {
			out = append(out, name)
		}
	}
	for name := range a {
		if _, ok := b[name]; !ok && !slices.Contains(reloaded, name) && name != "leaf" {
			out = append(out, name)
		}
	}
	if started.Leaf.MinTTL != now.Leaf.MinTTL {
		out = append(out, "leaf.min_ttl")
	}
	slices.Sort(out)
	return out
}

// sections is c's top-level JSON members, encoded.
func sections(c *config.Config) map[string]json.RawMessage {
	m := map[string]json.RawMessage{}
	b, err := json.Marshal(c)
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		// A Config always encodes; should it not, name everything.
		return map[string]json.RawMessage{"(agentca.json)": json.RawMessage(err.Error())}
	}
	return m
}
