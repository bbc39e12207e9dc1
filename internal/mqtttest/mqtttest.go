// Package mqtttest runs a mosquitto broker (Debian's mosquitto; scripts/test.sh installs it)
// that stands in for AWS IoT's MQTT endpoint in tests: TLS on 127.0.0.1 with a certificate
// authority, server certificate and client certificate generated for the test (crypto/x509),
// client certificates required, as AWS IoT requires them. Publish sends what AWS IoT would
// publish (shadow messages) to the gateway's subscriptions.
//
// Start skips the test when mosquitto is not installed, or fails it when COAPGW_REQUIRE_PEERS
// is set, so CI never passes by skipping. Stop and Restart simulate an outage of the endpoint;
// the broker keeps no state across them (persistence off), as an expired session would not.
package mqtttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Broker is one mosquitto process with its certificates.
type Broker struct {
	t    testing.TB
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
	// CAFile, CertFile and KeyFile are the CA's certificate (which signed the broker's) and a
	// client certificate and key the broker accepts, PEM files in the test's directory.
	CAFile, CertFile, KeyFile string
}

// binary finds mosquitto (in /usr/sbin on Debian, often not in a user's PATH).
func binary() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto"
	}
	return ""
}

// Start starts a broker on a free port of 127.0.0.1 and waits until it accepts TLS.
func Start(t testing.TB) *Broker {
	t.Helper()
	bin := binary()
	if bin == "" {
		if os.Getenv("COAPGW_REQUIRE_PEERS") != "" {
			t.Fatal("mosquitto not installed (Debian mosquitto; scripts/test.sh installs it)")
		}
		t.Skip("mosquitto not installed")
	}
	b := &Broker{t: t, dir: t.TempDir()}
	b.writeCerts()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := fmt.Sprintf(`user root
persistence false
log_dest stderr
listener %d 127.0.0.1
cafile %s
certfile %s
keyfile %s
require_certificate true
use_identity_as_username true
allow_anonymous true
`, b.port, b.CAFile, filepath.Join(b.dir, "server.pem"), filepath.Join(b.dir, "server-key.pem"))
	if err := os.WriteFile(filepath.Join(b.dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start(bin)
	t.Cleanup(b.Stop)
	return b
}

func (b *Broker) start(bin string) {
	b.t.Helper()
	b.cmd = exec.Command(bin, "-c", filepath.Join(b.dir, "mosquitto.conf"))
	log, err := os.OpenFile(filepath.Join(b.dir, "mosquitto.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.t.Fatal(err)
	}
	b.cmd.Stdout, b.cmd.Stderr = log, log
	if err := b.cmd.Start(); err != nil {
		log.Close()
		b.t.Fatalf("start mosquitto: %v", err)
	}
	log.Close()
	b.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(b.cmd, b.done)
	tc := b.clientTLS()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := tls.Dial("tcp", b.Addr(), tc)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-b.done:
			out, _ := os.ReadFile(filepath.Join(b.dir, "mosquitto.log"))
			b.t.Fatalf("mosquitto exited: %s", out)
		default:
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto not accepting TLS on %s: %v", b.Addr(), err)
		}
	}
}

// Addr is the broker's host:port.
func (b *Broker) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.port) }

// Stop stops the broker (idempotent).
func (b *Broker) Stop() {
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Kill()
	<-b.done
	b.cmd = nil
}

// Restart starts the broker again on the same port, without the sessions it had.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	b.start(binary())
}

// Publish publishes payload on topic with QoS 1, as AWS IoT publishes shadow messages.
func (b *Broker) Publish(topic string, payload []byte) {
	b.t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tls://" + b.Addr()).SetClientID(fmt.Sprintf("aws-iot-%d", time.Now().UnixNano())).
		SetTLSConfig(b.clientTLS()).SetAutoReconnect(false)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.t.Fatalf("connect to mosquitto: %v", tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func (b *Broker) clientTLS() *tls.Config {
	b.t.Helper()
	cert, err := tls.LoadX509KeyPair(b.CertFile, b.KeyFile)
	if err != nil {
		b.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(b.CAFile)
	pool.AppendCertsFromPEM(ca)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "127.0.0.1"}
}

// writeCerts generates the CA, the broker's certificate (for 127.0.0.1 and localhost) and a
// client certificate, as PEM files.
func (b *Broker) writeCerts() {
	b.t.Helper()
	caKey, caCert, caDER := b.cert(nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "coapgw test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	})
	b.CAFile = b.writePEM("ca.pem", "CERTIFICATE", caDER)
	srvKey, _, srvDER := b.cert(caKey, caCert, &x509.Certificate{
		Subject: pkix.Name{CommonName: "127.0.0.1"}, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	b.writePEM("server.pem", "CERTIFICATE", srvDER)
	b.writeKey("server-key.pem", srvKey)
	cliKey, _, cliDER := b.cert(caKey, caCert, &x509.Certificate{
		Subject:  pkix.Name{CommonName: "coapgw-gateway"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	b.CertFile = b.writePEM("client.pem", "CERTIFICATE", cliDER)
	b.KeyFile = b.writeKey("client-key.pem", cliKey)
}

// cert makes a key and a certificate from tmpl, signed by parent (self-signed when nil).
func (b *Broker) cert(parentKey *ecdsa.PrivateKey, parent, tmpl *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		b.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		b.t.Fatal(err)
	}
	return key, c, der
}

func (b *Broker) writeKey(name string, key *ecdsa.PrivateKey) string {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.writePEM(name, "PRIVATE KEY", der)
}

func (b *Broker) writePEM(name, typ string, der []byte) string {
	p := filepath.Join(b.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		b.t.Fatal(err)
	}
	return p
}
