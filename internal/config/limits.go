package config

// Limits bound what one listener may hold open. Zero means the default,
// derived at start from the process's file limit (which serve raises to
// its hard limit).
type Limits struct {
	// HTTPSConnections bounds the open connections of the HTTPS
	// listener.
	HTTPSConnections int `json:"https_connections,omitempty"`
	// HTTPConnections bounds the open connections of the HTTP listener.
	HTTPConnections int `json:"http_connections,omitempty"`
	// AdminConnections bounds the open connections of the admin socket;
	// the file descriptors it needs are kept apart from the others', so
	// an operator can always get in. Default DefaultAdminConnections.
	AdminConnections int `json:"admin_connections,omitempty"`
}

// DefaultAdminConnections is the admin socket's default bound.
const DefaultAdminConnections = 64

// maxConnections bounds a configured limit.
const maxConnections = 1 << 20

func (l *Limits) validate(bad func(field, format string, args ...any)) {
	for _, f := range []struct {
		name string
		v    int
	}{{"limits.https_connections", l.HTTPSConnections}, {"limits.http_connections", l.HTTPConnections},
		{"limits.admin_connections", l.AdminConnections}} {
		if f.v < 0 || f.v > maxConnections {
			bad(f.name, "%d is outside [1, %d] (0 or absent: derived from the file limit)", f.v, maxConnections)
		}
	}
}
