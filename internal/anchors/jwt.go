package anchors

// JWT-SVID keys follow the trust anchors (docs/jwt-svid.md): each anchor
// has its own ES256 JWT key (store.Anchor.JWTKey, JWTPublicKey), created
// with the anchor at staging; the JWT keys of staged, active and retiring
// anchors are published in the bundle and at jwks_uri, only the active
// anchor's signs, and retire waits until the last JWT-SVID a key signed
// has expired (jwt_svid.max_ttl after its successor's activation).

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/store"
)

// jwtMaxTTLNow is jwt_svid.max_ttl in the current agentca.json, or the one
// at start-up when the file cannot be read.
func (a *Runtime) jwtMaxTTLNow() time.Duration {
	cfg, err := config.Load(filepath.Join(a.dir, config.FileName))
	if err != nil {
		cfg = a.cfg
	}
	_, now := cfg.JWTSVID.TTLs()
	_, atStart := a.cfg.JWTSVID.TTLs()
	// The longer of the two: a token signed under the start-up ceiling
	// may still be valid after the file lowered it.
	return max(now, atStart)
}

// ensureJWTKey gives the active anchor a JWT-SVID key when it has none (a
// CA made before JWT-SVIDs, or by init): keys/jwt.key when the state
// directory has it (init made it, and every replica copied it), else a
// new key (KMS or keys/anchors/). Replicas starting at once each try; the
// store keeps the first, and a loser removes the key it made.
func (a *Runtime) ensureJWTKey(ctx context.Context) error {
	set, err := a.st.Anchors(ctx)
	if err != nil {
		return err
	}
	act := set.Active()
	if act == nil || act.JWTKey != "" {
		return nil
	}
	var signer crypto.Signer
	var ref string
	var made NewKeys
	if ref = a.keys.InitJWTKey(); ref != "" {
		if signer, err = a.keys.Load(roleJWT, ref); err != nil {
			return fmt.Errorf("JWT-SVID key %s: %w", ref, err)
		}
	} else {
		made = a.keys.New(ca.ECP256)
		if signer, ref, err = made.Create(roleJWT); err != nil {
			return errors.Join(fmt.Errorf("creating a JWT-SVID key: %w", err), made.Cleanup())
		}
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return err
	}
	_, err = a.st.UpdateAnchors(ctx, func(set *store.AnchorSet) error {
		an := set.Find(act.ID)
		if an == nil || an.JWTKey != "" {
			return errNoChange
		}
		an.JWTKey, an.JWTPublicKey = ref, pub
		return nil
	})
	switch {
	case errors.Is(err, errNoChange):
		if made != nil {
			return made.Cleanup()
		}
		return nil
	case err != nil:
		return err
	}
	a.log.Info("the active anchor has a JWT-SVID key now", "anchor", act.ID, "key", ref)
	return nil
}

// jwtKeys are the JWT-SVID public keys to publish (staged, active and
// retiring anchors') and the active anchor's signer (nil when it has no
// key or its key cannot be loaded here: /v1/jwt-svid then answers 503).
// a.mu is held.
func (a *Runtime) jwtKeys(set *store.AnchorSet) ([]crypto.PublicKey, crypto.Signer) {
	var pubs []crypto.PublicKey
	var active crypto.Signer
	a.jwtErr = nil
	if a.jwtSigners == nil {
		a.jwtSigners = map[string]crypto.Signer{}
	}
	for i := range set.Anchors {
		an := &set.Anchors[i]
		if an.State == store.AnchorRetired || len(an.JWTPublicKey) == 0 {
			delete(a.jwtSigners, an.ID)
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(an.JWTPublicKey)
		if err != nil {
			a.log.Error("anchor's JWT-SVID public key is unreadable; not published", "anchor", an.ID, "err", err)
			continue
		}
		if _, err := api.JWTKeyID(pub); err != nil {
			a.log.Error("anchor's JWT-SVID key is not ECDSA P-256; not published", "anchor", an.ID)
			continue
		}
		pubs = append(pubs, pub)
		if an.State != store.AnchorActive {
			continue
		}
		s := a.jwtSigners[an.ID]
		if s == nil {
			var err error
			if s, err = a.loadJWTSigner(an, pub); err != nil {
				a.jwtErr = err
				continue
			}
			a.jwtSigners[an.ID] = s
		}
		active = s
	}
	if active != nil {
		a.jwtErr = nil
		a.jwtErrLogged = ""
	}
	return pubs, active
}

// loadJWTSigner loads an's JWT key and checks it is pub. Its failure is
// logged once per distinct error: refresh retries every second (a key
// file copied from the replica that made it is picked up then).
func (a *Runtime) loadJWTSigner(an *store.Anchor, pub crypto.PublicKey) (crypto.Signer, error) {
	s, err := a.keys.Load(roleJWT, an.JWTKey)
	if err == nil {
		type equaler interface{ Equal(crypto.PublicKey) bool }
		if k, ok := s.Public().(equaler); !ok || !k.Equal(pub) {
			err = errors.New("the key file does not hold the stored public key")
		}
	}
	if err != nil {
		err = fmt.Errorf("anchor %s: JWT-SVID key %s: %w", an.ID, an.JWTKey, err)
		if msg := err.Error(); msg != a.jwtErrLogged {
			a.jwtErrLogged = msg
			a.log.Error("cannot load the active anchor's JWT-SVID key: JWT-SVIDs are refused (503) until it is here (copy it, 0600, from the replica that made it); retrying every second",
				"anchor", an.ID, "key", an.JWTKey, "err", err)
		}
		return nil, err
	}
	return s, nil
}

// jwtRetireMargin is how long after an activation another replica may
// still sign with the previous JWT key: until it applies the new anchor
// set (polled every pollInterval, or told by a watch).
const jwtRetireMargin = 2 * pollInterval

// checkJWTRetire refuses (without force) to retire an anchor whose JWT key
// may still have valid JWT-SVIDs out: those signed up to its successor's
// activation (RetiringAt, plus jwtRetireMargin for other replicas) live at
// most maxTTL.
func checkJWTRetire(set *store.AnchorSet, id string, now time.Time, maxTTL time.Duration, force bool) error {
	an := set.Find(id)
	if an == nil || force || an.JWTKey == "" || an.State != store.AnchorRetiring || an.RetiringAt.IsZero() {
		return nil
	}
	if until := an.RetiringAt.Add(jwtRetireMargin + maxTTL); now.Before(until) {
		return fmt.Errorf("%w: anchor %s's JWT-SVID key signed until %s and JWT-SVIDs live up to jwt_svid.max_ttl (%s): its last may be valid until %s; wait or use --force",
			ca.ErrAnchorUnsafe, id, an.RetiringAt.Format(time.RFC3339), maxTTL, until.Format(time.RFC3339))
	}
	return nil
}
