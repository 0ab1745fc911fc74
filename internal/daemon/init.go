package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/fsutil"
)

// InitOptions are the choices `agentca init` takes.
type InitOptions struct {
	Dir         string
	TrustDomain string
	// Name goes into the CA certificates' subjects; empty means "agentca".
	Name     string
	KeyType  ca.KeyType
	HTTPS    string
	HTTP     string
	Password []byte
	// KMS, when set, is the URI of a KMS (pkcs11:...) in which to create
	// the CA keys instead of files in keys/.
	KMS string
	// Storage, when set, replaces the default bbolt file (etcd: see
	// docs/ha.md). An etcd prefix that already holds a CA is refused.
	Storage *config.Storage
}

// InitResult describes a new CA.
type InitResult struct {
	Root        string // SHA-256 fingerprint of the root
	RootPath    string
	ConfigPath  string
	HTTPSURL    string
	HTTPURL     string
	TrustDomain string
}

// Init creates a CA in opts.Dir: keys (0600, encrypted when a password is
// given), the root and issuing certificates, roots.pem, log.pub.pem (the
// issuance log's key), agentca.json and an empty store. Everything is built in a staging directory beside Dir
// and moved in at the end, so a failure leaves no half-made CA. It refuses
// a directory that already holds a CA.
func Init(ctx context.Context, opts InitOptions) (*InitResult, error) {
	if err := identity.ValidateTrustDomain(opts.TrustDomain); err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = "agentca"
	}
	if opts.KeyType == "" {
		opts.KeyType = ca.ECP256
	}
	if opts.HTTPS == "" {
		opts.HTTPS = "127.0.0.1:8443"
	}
	if opts.HTTP == "" {
		opts.HTTP = "127.0.0.1:8080"
	}
	for _, a := range []string{opts.HTTPS, opts.HTTP} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("listen address %q: want host:port", a)
		}
	}
	cfg := config.Default(opts.TrustDomain, opts.HTTPS, opts.HTTP)
	cfg.KeyType = string(opts.KeyType)
	if opts.Storage != nil {
		cfg.Storage = *opts.Storage
		if cfg.Storage.Type == "etcd" && cfg.Storage.Prefix == "" {
			cfg.Storage.Prefix = config.DefaultEtcdPrefix
		}
	}
	if opts.KMS != "" {
		if len(opts.Password) > 0 {
			return nil, errors.New("--password-file and --kms exclude each other: keys in a KMS are not files to encrypt")
		}
		if opts.KeyType == ca.Ed25519 {
			return nil, errors.New("key type ed25519 is not supported in a KMS (want ec-p256, ec-p384 or rsa-2048)")
		}
		cfg.Keys.KMS = opts.KMS
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	exists, err := hasCA(dir)
	if err != nil {
		return nil, err
	}
	if exists {
		return nil, fmt.Errorf("%s: %w", dir, ErrExists)
	}
	if err := refuseForeign(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".init-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	if err := build(ctx, stage, cfg, opts); err != nil {
		return nil, err
	}
	if err := moveInto(stage, dir); err != nil {
		return nil, err
	}
	root, err := readCert(filepath.Join(dir, RootCertFile))
	if err != nil {
		return nil, err
	}
	return &InitResult{Root: Fingerprint(root), RootPath: filepath.Join(dir, RootsFile), ConfigPath: filepath.Join(dir, config.FileName),
		HTTPSURL: cfg.PublicURLs.HTTPS, HTTPURL: cfg.PublicURLs.HTTP, TrustDomain: cfg.TrustDomain}, nil
}

func build(ctx context.Context, stage string, cfg *config.Config, opts InitOptions) (err error) {
	for _, d := range []string{KeysDir, CertsDir} {
		if err := os.Mkdir(filepath.Join(stage, d), 0o700); err != nil {
			return err
		}
	}
	var h *ca.Hierarchy
	keys := &caKeys{dir: stage, password: opts.Password}
	if cfg.Keys.KMS != "" {
		kms, oerr := ca.OpenKMS(ctx, cfg.Keys.KMS)
		if oerr != nil {
			return oerr
		}
		created := &kmsKeys{kms: kms}
		defer func() {
			if err != nil {
				err = errors.Join(err, created.cleanup())
			}
			err = errors.Join(err, kms.Close())
		}()
		if h, err = createKMSKeys(created, &cfg.Keys, opts, statusBase(cfg)); err != nil {
			return err
		}
		keys.kms, keys.cfg = kms, cfg.Keys
	} else {
		if h, err = newFileHierarchy(opts.Name, opts.KeyType, statusBase(cfg)); err != nil {
			return err
		}
		if err := ca.WriteKey(filepath.Join(stage, RootKeyFile), h.RootKey, opts.Password); err != nil {
			return err
		}
		if err := ca.WriteKey(filepath.Join(stage, IssuingKeyFile), h.IssuingKey, opts.Password); err != nil {
			return err
		}
		if _, err := loadOrCreateKey(filepath.Join(stage, OCSPKeyFile), opts.Password); err != nil {
			return err
		}
	}
	// The issuance log's key: P-256 whatever the CA's key type, as CT
	// v1 tree heads allow only ECDSA P-256 or RSA. loadLogSigner also
	// writes log.pub.pem.
	if _, err := loadLogSigner(stage, keys); err != nil {
		return err
	}
	if _, err := keys.signer(roleToken, true); err != nil { // access tokens (docs/tokens.md)
		return err
	}
	if keys.kms == nil { // JWT-SVIDs (docs/jwt-svid.md); with a KMS, serve makes it there
		if _, err := loadOrCreateKey(filepath.Join(stage, JWTKeyFile), opts.Password); err != nil {
			return err
		}
	}
	files := map[string][]byte{
		RootCertFile: certPEM(h.Root),
		IssuingCert:  certPEM(h.Issuing),
		RootsFile:    certPEM(h.Root),
	}
	for name, data := range files {
		if err := fsutil.WriteNew(filepath.Join(stage, name), data, 0o644); err != nil {
			return err
		}
	}
	b, err := cfg.Marshal()
	if err != nil {
		return err
	}
	if err := fsutil.WriteNew(filepath.Join(stage, config.FileName), b, 0o600); err != nil {
		return err
	}
	st, err := openStore(ctx, stage, cfg.Storage, nil, nil)
	if err != nil {
		return err
	}
	if err := checkEmptyStore(ctx, st, cfg.Storage); err != nil {
		st.Close()
		return err
	}
	id, err := newStoreID()
	if err == nil {
		err = bindNewStore(ctx, st, stage, id)
	}
	return errors.Join(err, st.Close())
}

// createKMSKeys creates the CA keys in a KMS, records their names in cfg
// and signs the root and issuing certificates with them.
func createKMSKeys(m *kmsKeys, cfg *config.Keys, opts InitOptions, httpBase string) (*ca.Hierarchy, error) {
	tag, err := newKMSTag()
	if err != nil {
		return nil, err
	}
	rootKey, err := m.create(cfg, roleRoot, tag, opts.KeyType)
	if err != nil {
		return nil, err
	}
	issKey, err := m.create(cfg, roleIssuing, tag, opts.KeyType)
	if err != nil {
		return nil, err
	}
	// The OCSP and log keys are P-256 as when they are files.
	for _, role := range []string{roleOCSP, roleLog, roleToken} {
		if _, err := m.create(cfg, role, tag, ca.ECP256); err != nil {
			return nil, err
		}
	}
	return ca.NewHierarchyWithKeys(opts.Name, rootKey, issKey, time.Now(), httpBase)
}

// newFileHierarchy generates the root and issuing keys (written to files
// by the caller) and certifies them.
func newFileHierarchy(name string, kt ca.KeyType, httpBase string) (*ca.Hierarchy, error) {
	rootKey, err := ca.GenerateKey(kt)
	if err != nil {
		return nil, err
	}
	issKey, err := ca.GenerateKey(kt)
	if err != nil {
		return nil, err
	}
	return ca.NewHierarchyWithKeys(name, rootKey, issKey, time.Now(), httpBase)
}

// statusBase is the public HTTP URL the issuing CA names for its own
// status (OCSP and CRL, answered for by the root), or "" while it is not
// known: a listener on port 0 gets its port only when it starts.
func statusBase(cfg *config.Config) string {
	u, err := url.Parse(cfg.PublicURLs.HTTP)
	if err != nil || u.Port() == "0" {
		return ""
	}
	return cfg.PublicURLs.HTTP
}

// moveInto moves stage's entries into dir, which may not exist yet or may
// exist without a CA in it. The directory ends up 0700.
func moveInto(stage, dir string) error {
	if err := os.Chmod(stage, 0o700); err != nil {
		return err
	}
	if err := os.Rename(stage, dir); err == nil {
		return nil
	} else if !errors.Is(err, syscall.EEXIST) && !errors.Is(err, syscall.ENOTEMPTY) {
		return err
	}
	entries, err := os.ReadDir(stage)
	if err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Rename(filepath.Join(stage, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
