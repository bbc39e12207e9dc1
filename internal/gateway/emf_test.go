package gateway

import (
	"bufio"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// TestEMFMetrics: with --emf-interval the gateway sends its spool depth and stage lag as
// CloudWatch embedded metric format to the agent's address, under its gateway id; the spool's
// depth follows the records devices posted.
func TestEMFMetrics(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := testConfig(t)
	cfg.Local.Process = "none" // records stay in the spool
	cfg.Ingest.GatewayID = "i-0123456789abcdef0"
	cfg.EMF.Interval, cfg.EMF.Addr, cfg.EMF.Namespace = time.Second, "tcp://"+l.Addr().String(), "coapgw/test"
	g, _, _ := start(t, cfg)
	for i := range 3 {
		if resp := post(t, g, "/meter/m-1", `{"kwh":1}`); resp.Code != coapmsg.Changed {
			t.Fatalf("post %d: %v", i, resp.Code)
		}
	}
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("no document with the spool's depth: %v", err)
		}
		var doc struct {
			AWS struct {
				CloudWatchMetrics []struct{ Namespace string }
			} `json:"_aws"`
			GatewayID       string   `json:"GatewayId"`
			SpoolDepth      *float64 `json:"SpoolDepth"`
			StageLagSeconds *float64 `json:"StageLagSeconds"`
		}
		if err := json.Unmarshal(line, &doc); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if doc.GatewayID != cfg.Ingest.GatewayID || len(doc.AWS.CloudWatchMetrics) != 1 || doc.AWS.CloudWatchMetrics[0].Namespace != "coapgw/test" ||
			doc.SpoolDepth == nil || doc.StageLagSeconds == nil {
			t.Fatalf("document %s", line)
		}
		if *doc.SpoolDepth == 3 {
			return
		}
	}
}
