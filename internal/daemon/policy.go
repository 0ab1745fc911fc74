package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/policy"
)

// LoadPolicy reads and compiles the policy agentca.json names (relative
// paths are under dir). No policy.file means no rules; the default then
// applies to every request. An error names the rule that does not
// compile.
func LoadPolicy(dir string, cfg *config.Config) (*api.Policy, error) {
	if cfg.Policy.File == "" {
		if cfg.Policy.DefaultEffect() == "allow" {
			return nil, nil
		}
		return nil, fmt.Errorf("policy: default %s needs policy.file", cfg.Policy.DefaultEffect())
	}
	path := cfg.Policy.File
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p, err := policy.Parse(b, policy.Effect(cfg.Policy.DefaultEffect()))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &api.Policy{Rules: p, Environment: cfg.Policy.Environment}, nil
}

// reloadPolicyOnHUP re-reads agentca.json's policy section and the
// policy file on SIGHUP and swaps the compiled policy in; requests in
// flight finish with the one they started with. A file that does not
// parse or a rule that does not compile keeps the running policy, and
// the log says which rule and why.
func reloadPolicyOnHUP(ctx context.Context, dir, cfgPath string, srv *api.Server, log *slog.Logger) {
	onSIGHUP(ctx, func() {
		cfg, err := config.Load(cfgPath)
		var p *api.Policy
		if err == nil {
			p, err = LoadPolicy(dir, cfg)
		}
		if err != nil {
			log.Error("policy reload failed; keeping the running policy", "err", err)
			return
		}
		srv.SetPolicy(p)
		rules := 0
		if p != nil {
			rules = p.Rules.Len()
		}
		log.Info("reloaded policy", "file", cfg.Policy.File, "rules", rules, "default", cfg.Policy.DefaultEffect())
	})
}
