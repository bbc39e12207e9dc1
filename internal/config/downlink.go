package config

import (
	"os"
	"time"
)

// Downlink configures the downlink from AWS IoT (internal/awsdownlink; serve with --queue):
// an MQTT connection to the account's data endpoint with the gateway's own certificate.
type Downlink struct {
	Endpoint    string        // iot-downlink-endpoint: host[:port] (8883); empty: off
	ClientID    string        // iot-downlink-client-id: empty: coapgw-<gateway-id>
	CertFile    string        // iot-downlink-cert-file
	KeyFile     string        // iot-downlink-key-file
	CAFile      string        // iot-downlink-ca-file: empty: the system's CAs
	CacheBytes  Size          // iot-downlink-cache-bytes
	FetchBudget time.Duration // iot-downlink-fetch-budget
	FetchRate   int           // iot-downlink-fetch-rate: GetThingShadow calls a second at most
	Documents   bool          // iot-downlink-documents: subscribe to update/documents too
}

func defaultDownlink() Downlink {
	return Downlink{CacheBytes: 64 * MiB, FetchBudget: 100 * time.Millisecond, FetchRate: 50}
}

// validateDownlink checks the downlink settings (serve).
func (c *Config) validateDownlink(v *validator) {
	d := c.Downlink
	if d.Endpoint == "" {
		return
	}
	if c.AWS.Queue == "" {
		v.bad("iot-downlink-endpoint needs --queue (in local mode desired state is the registry's)")
	}
	for _, f := range []struct{ name, path string }{{"iot-downlink-cert-file", d.CertFile}, {"iot-downlink-key-file", d.KeyFile}, {"iot-downlink-ca-file", d.CAFile}} {
		if f.path == "" {
			if f.name != "iot-downlink-ca-file" {
				v.bad("%s is needed with iot-downlink-endpoint", f.name)
			}
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			v.bad("%s: %v", f.name, err)
		}
	}
	if d.CacheBytes < 64*KiB {
		v.bad("iot-downlink-cache-bytes %d: want at least 64KiB", d.CacheBytes)
	}
	if d.FetchBudget < 0 || d.FetchBudget > ackTimeout {
		v.bad("iot-downlink-fetch-budget %v: want 0–2s (the device's answer waits for it)", d.FetchBudget)
	}
	if d.FetchRate < 1 {
		v.bad("iot-downlink-fetch-rate %d: want 1 or more", d.FetchRate)
	}
}
