package config

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

// appWith is minimal with hostnames and a table appended to its http_service.
func appWith(hostnames, service string) string {
	return fmt.Sprintf(`
[[apps]]
name = "web"
hostnames = [%s]
  [apps.http_service]
  internal_port = 8080
%s
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
`, hostnames, service)
}

func TestACMEDefaults(t *testing.T) {
	cfg, _, err := Load(write(t, t.TempDir(), "c.toml", "[acme]\nemail = \"ops@example.com\"\n"+appWith(`"a.example.com"`, "")))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.ACME
	if a.Directory != DefaultACMEDirectory || a.StorageDir != DefaultACMEStorageDir ||
		a.RenewCheckInterval.D() != 10*time.Minute || !slices.Equal(a.Challenges, DefaultACMEChallenges) {
		t.Errorf("defaults not applied: %+v", a)
	}
	if !a.ACMEChallenge(ChallengeHTTP) || !a.ACMEChallenge(ChallengeTLSALPN) {
		t.Error("both challenges should be enabled by default")
	}
}

// The [acme] problems are in TestProblems; a wildcard name is refused
// only when no file covers it.
func TestACMEWildcardFileCovers(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, err := tlsterm.WriteTestCert(dir, "*.files.example.com")
	if err != nil {
		t.Fatal(err)
	}
	fileCert := fmt.Sprintf("[[certificates]]\ncert_file = %q\nkey_file = %q\n", certFile, keyFile)
	if _, _, err := Load(write(t, dir, "c.toml", "[acme]\n"+fileCert+appWith(`"*.files.example.com"`, ""))); err != nil {
		t.Errorf("a wildcard name a file certificate covers: %v", err)
	}
}

// validate notes a TLS hostname that can get no certificate at all, and
// only that.
func TestNoCertificateNote(t *testing.T) {
	selfSigned := "    [apps.http_service.tls_options]\n    default_self_signed = true\n"
	cases := []struct {
		name, body string
		note       bool
	}{
		{"no way to a certificate", appWith(`"a.example.com"`, ""), true},
		{"acme", "[acme]\n" + appWith(`"a.example.com"`, ""), false},
		{"self-signed fallback", appWith(`"a.example.com"`, selfSigned), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, notices, err := Load(write(t, t.TempDir(), "c.toml", tc.body))
			if err != nil {
				t.Fatal(err)
			}
			got := slices.ContainsFunc(notices, func(p Problem) bool {
				return p.Key == "apps[0].hostnames" && strings.Contains(p.Msg, "a.example.com has no certificate")
			})
			if got != tc.note {
				t.Errorf("note about a.example.com: %v, want %v (notices %v)", got, tc.note, notices)
			}
		})
	}
}
