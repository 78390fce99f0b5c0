package tlsterm

import "testing"

func TestSNIHost(t *testing.T) {
	for sni, want := range map[string]string{
		"":                "",
		"sec.test":        "sec.test",
		"sec.test.":       "sec.test.", // the dot is Lookup's business
		"127.0.0.1":       "",
		"::1":             "",
		"fe80::1%eth0":    "",
		"::ffff:10.0.0.1": "",
		"1.2.3.4.example": "1.2.3.4.example",
		"1.2.3":           "1.2.3", // not an address
	} {
		if got := SNIHost(sni); got != want {
			t.Errorf("SNIHost(%q) = %q, want %q", sni, got, want)
		}
	}
}
