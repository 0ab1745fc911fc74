package jointoken_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/internal/testca"
	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/provisioners/jointoken"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
)

const testID = "spiffe://example.org/agent/jt"

var start = time.Date(2030, time.March, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable clock for the provisioner.
type clock struct{ ns atomic.Int64 }

func newClock() *clock                   { c := &clock{}; c.ns.Store(start.UnixNano()); return c }
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func openStore(t *testing.T) (*bolt.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agentca.db")
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, path
}

func newProvisioner(t *testing.T, name string, st jointoken.TokenStore, ttl time.Duration, clk *clock) *jointoken.Provisioner {
	t.Helper()
	p, err := jointoken.New(name, st, ttl, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var tokenFormat = regexp.MustCompile(`^agentca-jt-[A-Za-z0-9_-]{43}$`)

func TestNew(t *testing.T) {
	st, _ := openStore(t)
	if _, err := jointoken.New("", st, 0, nil); err == nil {
		t.Error("New accepted an empty name")
	}
	if _, err := jointoken.New("join", nil, 0, nil); err == nil {
		t.Error("New accepted a nil store")
	}
	// Zero ttl means 15 minutes.
	clk := newClock()
	p := newProvisioner(t, "join", st, 0, clk)
	got, err := p.Create(context.Background(), testID, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := start.Add(15 * time.Minute); !got[0].ExpiresAt.Equal(want) {
		t.Fatalf("ExpiresAt = %s, want %s", got[0].ExpiresAt, want)
	}
}

func TestCreate(t *testing.T) {
	tests := []struct {
		name      string
		count     int
		want      int
		ttl       time.Duration
		wantTTL   time.Duration
		provTTL   time.Duration
		spiffeID  string
		provision string
	}{
		{name: "one", count: 1, want: 1, provTTL: time.Hour, wantTTL: time.Hour},
		{name: "zero means one", count: 0, want: 1, provTTL: time.Hour, wantTTL: time.Hour},
		{name: "negative means one", count: -3, want: 1, provTTL: time.Hour, wantTTL: time.Hour},
		{name: "many", count: 50, want: 50, provTTL: time.Hour, wantTTL: time.Hour},
		{name: "explicit ttl", count: 2, want: 2, ttl: 5 * time.Minute, provTTL: time.Hour, wantTTL: 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			st, path := openStore(t)
			clk := newClock()
			p := newProvisioner(t, "join", st, tt.provTTL, clk)
			got, err := p.Create(ctx, testID, tt.ttl, tt.count)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.want {
				t.Fatalf("Create made %d tokens, want %d", len(got), tt.want)
			}
			seen := map[string]bool{}
			for _, c := range got {
				if !tokenFormat.MatchString(c.Token) {
					t.Fatalf("token %q is not %s + 43 base64url characters", c.Token, jointoken.Prefix)
				}
				raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(c.Token, jointoken.Prefix))
				if err != nil || len(raw) != 32 {
					t.Fatalf("token %q does not carry 256 bits: %v", c.Token, err)
				}
				if seen[c.Token] {
					t.Fatalf("token %q created twice", c.Token)
				}
				seen[c.Token] = true
				if c.SPIFFEID != testID || !c.ExpiresAt.Equal(start.Add(tt.wantTTL)) {
					t.Fatalf("Created = %+v, want %s expiring at %s", c, testID, start.Add(tt.wantTTL))
				}
				h := sha256.Sum256([]byte(c.Token))
				if !bytes.Equal(jointoken.Hash(c.Token), h[:]) {
					t.Fatal("Hash is not the SHA-256 of the token")
				}
				rec, err := st.JoinToken(ctx, h[:])
				if err != nil {
					t.Fatalf("token not stored under its SHA-256: %v", err)
				}
				if rec.SPIFFEID != testID || rec.Provisioner != "join" || rec.UsedBy != "" ||
					!rec.CreatedAt.Equal(start) || !rec.ExpiresAt.Equal(start.Add(tt.wantTTL)) {
					t.Fatalf("stored token = %+v", rec)
				}
			}

			// Only the hash reaches the disk.
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range got {
				b64 := strings.TrimPrefix(c.Token, jointoken.Prefix)
				raw, _ := base64.RawURLEncoding.DecodeString(b64)
				for _, secret := range [][]byte{[]byte(c.Token), []byte(b64), raw,
					[]byte(base64.StdEncoding.EncodeToString(raw)), []byte(base64.RawStdEncoding.EncodeToString(raw))} {
					if bytes.Contains(db, secret) {
						t.Fatalf("the bolt file contains the plaintext of token %q", c.Token)
					}
				}
				// Control: the hash is there, so we read the right bytes.
				if !bytes.Contains(db, jointoken.Hash(c.Token)) {
					t.Fatalf("the bolt file does not contain the hash of token %q", c.Token)
				}
			}
		})
	}
}

func TestAttest(t *testing.T) {
	ctx := context.Background()
	st, _ := openStore(t)
	clk := newClock()
	p := newProvisioner(t, "join", st, 10*time.Minute, clk)
	created, err := p.Create(ctx, testID, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	fresh, toUse, toExpire, otherProv := created[0].Token, created[1].Token, created[2].Token, created[3].Token

	// Consume toUse the way the CA does: in the transaction that records
	// the certificate.
	authority, _ := testca.Authority(t, "jt-test", st, clk.Now)
	id, err := p.Attest(ctx, toUse)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ca.GenerateKey(ca.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authority.Issue(ctx, &ca.Request{PublicKey: key.Public(), SPIFFEID: id.SPIFFEID, Provisioner: "join",
		JoinToken: id.JoinToken}); err != nil {
		t.Fatal(err)
	}

	// A token of the same store and ID, but made by another provisioner.
	other := newProvisioner(t, "other", st, 10*time.Minute, clk)

	unknown := jointoken.Prefix + strings.Repeat("A", 43)
	tests := []struct {
		name    string
		p       *jointoken.Provisioner
		token   string
		advance time.Duration
		ok      bool
	}{
		{name: "fresh", p: p, token: fresh, ok: true},
		{name: "fresh again (Attest does not consume)", p: p, token: fresh, ok: true},
		{name: "empty", p: p, token: ""},
		{name: "prefix only", p: p, token: jointoken.Prefix},
		{name: "one character short", p: p, token: fresh[:len(fresh)-1]},
		{name: "one character long", p: p, token: fresh + "A"},
		{name: "without prefix", p: p, token: strings.TrimPrefix(fresh, jointoken.Prefix)},
		{name: "case changed", p: p, token: strings.ToUpper(fresh)},
		{name: "unknown", p: p, token: unknown},
		{name: "whitespace", p: p, token: " " + fresh[1:]},
		// A used token passes Attest: the store gives a retry with
		// the same key its certificate and refuses any other use.
		{name: "used", p: p, token: toUse, ok: true},
		{name: "other provisioner", p: other, token: otherProv},
		{name: "one second before expiry", p: p, token: toExpire, advance: 10*time.Minute - time.Second, ok: true},
		{name: "at expiry", p: p, token: toExpire, advance: time.Second},
		{name: "after expiry", p: p, token: toExpire, advance: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.Advance(tt.advance)
			id, err := tt.p.Attest(ctx, tt.token)
			if !tt.ok {
				if id != nil || !errors.Is(err, provisioners.ErrUnauthorized) {
					t.Fatalf("Attest = %+v, %v; want ErrUnauthorized", id, err)
				}
				if strings.Contains(err.Error(), tt.token) && tt.token != "" {
					t.Fatalf("the error %q repeats the token", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if id.SPIFFEID != testID || !bytes.Equal(id.JoinToken, jointoken.Hash(tt.token)) ||
				id.Claims["spiffe_id"] != testID || len(id.DNSNames) != 0 {
				t.Fatalf("Identity = %+v", id)
			}
		})
	}
}

func TestAttestStoreClosed(t *testing.T) {
	st, _ := openStore(t)
	clk := newClock()
	p := newProvisioner(t, "join", st, time.Hour, clk)
	created, err := p.Create(context.Background(), testID, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	id, err := p.Attest(context.Background(), created[0].Token)
	if id != nil || err == nil {
		t.Fatalf("Attest with a closed store = %+v, %v; want an error", id, err)
	}
	if !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Attest = %v, want store.ErrClosed (a store failure, not a refusal)", err)
	}
	if _, err := p.Create(context.Background(), testID, 0, 1); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Create with a closed store = %v, want store.ErrClosed", err)
	}
}

func TestSingleUseUnderConcurrency(t *testing.T) {
	// Every attempt attests successfully before any consumes the token;
	// the store lets exactly one of them turn it into a certificate.
	ctx := context.Background()
	st, _ := openStore(t)
	clk := newClock()
	p := newProvisioner(t, "join", st, time.Hour, clk)
	created, err := p.Create(ctx, testID, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	authority, _ := testca.Authority(t, "jt-test", st, clk.Now)
	const n = 32
	ids := make([]*provisioners.Identity, n)
	for i := range ids {
		if ids[i], err = p.Attest(ctx, created[0].Token); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var issued, refused atomic.Int32
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key, err := ca.GenerateKey(ca.ECP256)
			if err != nil {
				errs <- err
				return
			}
			_, err = authority.Issue(ctx, &ca.Request{PublicKey: key.Public(), SPIFFEID: ids[i].SPIFFEID,
				Provisioner: "join", JoinToken: ids[i].JoinToken})
			switch {
			case err == nil:
				issued.Add(1)
			case errors.Is(err, store.ErrTokenInvalid):
				refused.Add(1)
			default:
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if issued.Load() != 1 || refused.Load() != n-1 {
		t.Fatalf("%d issued, %d refused; want 1 and %d", issued.Load(), refused.Load(), n-1)
	}
	// Attest lets the used token through (for a retry); the store
	// refuses it for any other key.
	id, err := p.Attest(ctx, created[0].Token)
	if err != nil {
		t.Fatalf("Attest after use = %v", err)
	}
	key, _ := ca.GenerateKey(ca.ECP256)
	if _, err := authority.Issue(ctx, &ca.Request{PublicKey: key.Public(), SPIFFEID: id.SPIFFEID, Provisioner: "join",
		JoinToken: id.JoinToken}); !errors.Is(err, store.ErrTokenInvalid) {
		t.Fatalf("a spent token with a new key: err = %v, want ErrTokenInvalid", err)
	}
}
