package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	l, err := Load("t", nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	if c.CoAPAddr != ":5683" || c.HTTPAddr != ":8080" || c.DataDir != "./data" || c.MaxPayload != 8192 {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

func TestPrecedenceFileEnvFlag(t *testing.T) {
	f := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(f, []byte("coap_addr: 127.0.0.1:1\nhttp_addr: 127.0.0.1:2\ndata_dir: /file\nretry_after: 7s\n"), 0o644)
	l, err := Load("t", []string{"--config", f, "--data-dir", "/flag"},
		env(map[string]string{"COAPGW_HTTP_ADDR": "127.0.0.1:3", "COAPGW_DATA_DIR": "/env"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	if c.CoAPAddr != "127.0.0.1:1" || c.HTTPAddr != "127.0.0.1:3" || c.DataDir != "/flag" || c.RetryAfter != 7*time.Second {
		t.Fatalf("got %+v", c)
	}
}

func TestEnvNames(t *testing.T) {
	for flag, want := range map[string]string{"coap-addr": "COAPGW_COAP_ADDR", "http-addr": "COAPGW_HTTP_ADDR", "data-dir": "COAPGW_DATA_DIR"} {
		if got := EnvName(flag); got != want {
			t.Errorf("%s: %s, want %s", flag, got, want)
		}
	}
	l, err := Load("t", nil, env(map[string]string{"COAPGW_COAP_ADDR": "[::1]:9", "COAPGW_MAX_PAYLOAD": "100"}), io.Discard)
	if err != nil || l.Config.CoAPAddr != "[::1]:9" || l.Config.MaxPayload != 100 {
		t.Fatalf("%v %+v", err, l)
	}
}

func TestBadValues(t *testing.T) {
	if _, err := Load("t", nil, env(map[string]string{"COAPGW_MAX_PAYLOAD": "lots"}), io.Discard); err == nil || !strings.Contains(err.Error(), "COAPGW_MAX_PAYLOAD") {
		t.Fatalf("bad env value: %v", err)
	}
	if _, err := Load("t", []string{"--retry-after", "soon"}, env(nil), io.Discard); err == nil {
		t.Fatal("bad flag value accepted")
	}
	f := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(f, []byte("coap_adr: x\n"), 0o644)
	if _, err := Load("t", []string{"--config", f}, env(nil), io.Discard); err == nil {
		t.Fatal("misspelled key accepted")
	}
	c := Default()
	c.MaxPayload, c.LogLevel, c.PiggybackDeadline = 0, "loud", 3*time.Second
	err := c.Validate()
	for _, want := range []string{"max-payload", "log-level", "piggyback-deadline"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate does not report %s: %v", want, err)
		}
	}
}
