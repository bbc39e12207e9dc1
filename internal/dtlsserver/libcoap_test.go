package dtlsserver

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestLibcoapClients speaks to the server with libcoap's DTLS clients (OpenSSL and GnuTLS
// builds): with the right key the POST reaches the handler with the PSK identity and the client
// gets 2.04; with a wrong key the handshake fails and the handler sees nothing.
func TestLibcoapClients(t *testing.T) {
	for _, client := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		t.Run(client, func(t *testing.T) {
			bin, err := exec.LookPath(client)
			if err != nil {
				if os.Getenv("COAPGW_REQUIRE_PEERS") != "" {
					t.Fatalf("%s not installed (Debian libcoap3-bin)", client)
				}
				t.Skipf("%s not installed", client)
			}
			ts := startServer(t, Config{HandshakeTimeout: 2 * time.Second})
			uri := "coaps://" + ts.LocalAddr().String() + "/sensor/dev-1"
			run := func(key string) (string, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				// -v 6 makes the client log the response it got (its code included).
				out, err := exec.CommandContext(ctx, bin, "-m", "post", "-e", `{"t":1}`, "-u", "sensor/dev-1", "-k", key,
					"-B", "3", "-v", "6", uri).CombinedOutput()
				return string(out), err
			}

			out, err := run(string(keys["sensor/dev-1"]))
			if err != nil {
				t.Fatalf("%s: %v\n%s", client, err, out)
			}
			if !strings.Contains(out, "c:2.04") {
				t.Errorf("%s output does not show 2.04:\n%s", client, out)
			}
			got := ts.h.all()
			if len(got) != 1 || got[0].identity != "sensor/dev-1" || got[0].path != "sensor/dev-1" || got[0].payload != `{"t":1}` {
				t.Fatalf("handler got %+v", got)
			}

			out, _ = run("a wrong key!!!!!") // libcoap exits 0 even when the handshake fails
			if strings.Contains(out, "c:2.04") {
				t.Errorf("%s with a wrong key got 2.04:\n%s", client, out)
			}
			waitFor(t, "the failed handshake to end", func() bool {
				_, hs := ts.Sessions()
				return hs == 0 && ts.handshakes(resultFailed)+ts.handshakes(resultTimeout) >= 1
			})
			if n := len(ts.h.all()); n != 1 {
				t.Fatalf("handler got %d requests, want only the one with the right key", n)
			}
			if ok := ts.handshakes(resultOK); ok != 1 {
				t.Fatalf("%v handshakes succeeded, want 1", ok)
			}
		})
	}
}
