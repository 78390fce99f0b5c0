package config

import (
	"strings"
	"testing"
)

func TestRedactedEndpoint(t *testing.T) {
	for in, want := range map[string]string{
		"":                                    "",
		"http://127.0.0.1:4318":               "http://127.0.0.1:4318",
		"https://otlp.example/otlp":           "https://otlp.example/otlp",
		"https://xxxxx@otlp.example/otlp":     "https://REDACTED@otlp.example/otlp",
		"https://user:pass@otlp.example:4318": "https://REDACTED@otlp.example:4318",
		"https://otlp.example/?api_key=k&x=1": "https://otlp.example/?api_key=REDACTED&x=REDACTED",
		"https://otlp.example/?baretoken":     "https://otlp.example/?REDACTED",
		"https://otlp.example/?a=1&&b":        "https://otlp.example/?a=REDACTED&&REDACTED",
		"https://otlp.example/#frag-secret":   "https://otlp.example/#REDACTED",
		"//user:pass@otlp.example":            "//REDACTED@otlp.example",
		"user:pass@otlp.example:4318":         "REDACTED@otlp.example:4318",
		"127.0.0.1:4318":                      "127.0.0.1:4318",
		"127.0.0.1:4318?token=t":              "127.0.0.1:4318?REDACTED",
		"http://u:p@host:bad:port/?k=v":       "REDACTED@host:bad:port/?REDACTED",
		"http://otlp.example/%zz?api_key=k#f": "http://otlp.example/%zz?REDACTED", // unparsable, no userinfo
	} {
		got := Tracing{Endpoint: in}.RedactedEndpoint()
		if got != want {
			t.Errorf("RedactedEndpoint(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestTracingEndpointProblemRedacted: the problem reported for a bad
// tracing endpoint (logged on a refused reload, returned by POST
// /v1/reload) shows the endpoint without its credentials.
func TestTracingEndpointProblemRedacted(t *testing.T) {
	body := "[tracing]\nenabled = true\nendpoint = \"ftp://otel:pa55word@collector.example/?api_key=k3y\"\n" + minimal
	_, _, err := Load(write(t, t.TempDir(), "c.toml", body))
	if err == nil {
		t.Fatal("an ftp endpoint was accepted")
	}
	msg := err.Error()
	if strings.Contains(msg, "pa55word") || strings.Contains(msg, "k3y") || !strings.Contains(msg, "REDACTED@collector.example") {
		t.Errorf("problem: %s", msg)
	}
}
