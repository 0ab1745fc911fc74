package daemon

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/provisioners/awsiid"
	"github.com/agentca/agentca/provisioners/azureimds"
	"github.com/agentca/agentca/provisioners/azuremsi"
	"github.com/agentca/agentca/provisioners/gcpiit"
	"github.com/agentca/agentca/provisioners/jointoken"
	"github.com/agentca/agentca/provisioners/k8ssa"
	"github.com/agentca/agentca/store"
)

// newProvisioners makes the configured provisioners. The built-in kinds
// are listed here, explicitly: no registration at init time. Each kind
// parses its own fields strictly; an error names the provisioner and the
// field.
func newProvisioners(cfg *config.Config, st store.Store, log *slog.Logger) (map[string]*api.Provisioner, error) {
	out := make(map[string]*api.Provisioner, len(cfg.Provisioners))
	hc := &http.Client{Timeout: 10 * time.Second}
	for i, pc := range cfg.Provisioners {
		where := fmt.Sprintf("config: provisioners[%d] (%s)", i, pc.Name)
		def, max := cfg.TTLs(pc)
		entry := &api.Provisioner{Name: pc.Name, Type: pc.Type, DefaultTTL: def, MaxTTL: max}
		plog := log.With("provisioner", pc.Name)
		var (
			p        provisioners.Provisioner
			template string
			err      error
		)
		switch pc.Type {
		case config.TypeJoinToken:
			p, err = jointoken.New(pc.Name, st, pc.TokenTTL.Std(), nil)
		case config.TypeK8sSA:
			var c *k8ssa.Config
			if c, err = k8ssa.ParseConfig(pc.Options); err == nil {
				p, err = k8ssa.New(pc.Name, c, k8ssa.Options{SingleUse: pc.SingleUse, HTTPClient: hc, Logger: plog})
			}
			template = k8ssa.DefaultTemplate
		case config.TypeGCPIIT:
			var c *gcpiit.Config
			if c, err = gcpiit.ParseConfig(pc.Options); err == nil {
				p, err = gcpiit.New(pc.Name, c, gcpiit.Options{SingleUse: pc.SingleUse, HTTPClient: hc, Logger: plog})
			}
			template = gcpiit.DefaultTemplate
		case config.TypeAzureMSI:
			var c *azuremsi.Config
			if c, err = azuremsi.ParseConfig(pc.Options); err == nil {
				p, err = azuremsi.New(pc.Name, c, azuremsi.Options{SingleUse: pc.SingleUse, HTTPClient: hc, Logger: plog})
			}
			template = azuremsi.DefaultTemplate
		case config.TypeAWSIID:
			var c *awsiid.Config
			if c, err = awsiid.ParseConfig(pc.Options); err == nil {
				p, err = awsiid.New(pc.Name, c, awsiid.Options{Logger: plog})
			}
			template = awsiid.DefaultTemplate
		case config.TypeAzureIMDS:
			var c *azureimds.Config
			if c, err = azureimds.ParseConfig(pc.Options); err == nil {
				p, err = azureimds.New(pc.Name, c, azureimds.Options{Logger: plog})
			}
			template = azureimds.DefaultTemplate
		default:
			err = fmt.Errorf("unknown type %q", pc.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if pc.SPIFFEIDTemplate != "" {
			template = pc.SPIFFEIDTemplate
		}
		if template != "" {
			if entry.Template, err = provisioners.NewTemplate(template, pc.DNSSANs); err != nil {
				return nil, fmt.Errorf("%s: spiffe_id_template: %w", where, err)
			}
		}
		entry.Provisioner = p
		out[pc.Name] = entry
	}
	return out, nil
}
