package daemon

import (
	"log/slog"
	"reflect"
	"strings"

	"github.com/agentca/agentca/internal/config"
)

// reloadable are the agentca.json sections SIGHUP applies; any other
// change needs a restart.
var reloadable = map[string]bool{"provisioners": true, "policy": true}

// warnNotReloaded logs one WARN for each setting that differs between the
// configuration the daemon started with and the one SIGHUP read, when
// SIGHUP cannot apply it: the operator learns the edit did nothing yet.
// Settings are named as in agentca.json ("leaf.default_ttl").
func warnNotReloaded(log *slog.Logger, running, next *config.Config) {
	for _, name := range changedSettings(reflect.ValueOf(*running), reflect.ValueOf(*next), "") {
		if !reloadable[strings.SplitN(name, ".", 2)[0]] {
			log.Warn("setting changed in agentca.json; it takes effect only after a restart", "setting", name)
		}
	}
}

// changedSettings names the fields of two config structs that differ,
// one level into nested sections.
func changedSettings(a, b reflect.Value, prefix string) []string {
	var out []string
	for i := range a.NumField() {
		f := a.Type().Field(i)
		name := strings.Split(f.Tag.Get("json"), ",")[0]
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		fa, fb := a.Field(i), b.Field(i)
		if reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			continue
		}
		if f.Type.Kind() == reflect.Struct && prefix == "" {
			out = append(out, changedSettings(fa, fb, name+".")...)
			continue
		}
		out = append(out, prefix+name)
	}
	return out
}
