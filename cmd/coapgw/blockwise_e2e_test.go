package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
)

// jsonBody is a JSON object of exactly n bytes (n ≥ 10).
func jsonBody(n int) []byte {
	return []byte(`{"pad":"` + strings.Repeat("x", n-10) + `"}`)
}

// sameJSON reports whether a and b are the same JSON document (the spool prints payloads
// compacted).
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var ca, cb bytes.Buffer
	if err := json.Compact(&ca, a); err != nil {
		t.Fatal(err)
	}
	if err := json.Compact(&cb, b); err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// TestBlockwiseLibcoap: libcoap's client sends a 3 KB and an 8 KB JSON file block-wise (Block1,
// 1,024-byte blocks, with Size1 and Request-Tag): 2.31 for each block but the last, 2.04 for
// the last, and each record is stored whole, once. A 10 KB file announces its size in Size1 and
// gets 4.13 at its first block, with Size1 = the limit; nothing of it is stored. GET
// /.well-known/core in 16-byte blocks (Block2) comes back whole.
func TestBlockwiseLibcoap(t *testing.T) {
	bin := lookPeer(t, "coap-client-notls")
	dir := t.TempDir()
	g := startGW(t, dir)
	uri := func(p string) string { return fmt.Sprintf("coap://%s%s", g.coap, p) }
	files := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(files, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(args ...string) string {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("coap-client %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	bodies := map[string][]byte{"blk-3k": jsonBody(3000), "blk-8k": jsonBody(8100)}
	for _, id := range []string{"blk-3k", "blk-8k"} {
		b := bodies[id]
		out := run("-v", "7", "-m", "post", "-t", "50", "-f", write(id+".json", b), uri("/sensor/"+id))
		blocks := (len(b) + 1023) / 1024
		if n := strings.Count(out, "t:ACK c:2.31"); n != blocks-1 || strings.Count(out, "t:ACK c:2.04") != 1 {
			t.Fatalf("%s (%d bytes, %d blocks): %d answers 2.31, want %d, and one 2.04:\n%s", id, len(b), blocks, n, blocks-1, lastLines(out, 20))
		}
	}
	out := run("-m", "post", "-t", "50", "-f", write("blk-10k.json", jsonBody(10_000)), uri("/sensor/blk-10k"))
	if !strings.Contains(out, "4.13") {
		t.Fatalf("10 KB via coap-client: %q, want 4.13", lastLines(out, 5))
	}
	if out := run("-b", "16", "-m", "get", uri("/.well-known/core")); !strings.Contains(out, `</health>;rt="coapgw.health";ct=50`) {
		t.Fatalf("well-known/core in 16-byte blocks: %q", out)
	}
	m := scrape(t, g)
	if n := metricValue(t, m, `coapgw_coap_block1_total{outcome="too_large"}`); n != 1 {
		t.Errorf("too_large counted %v, want 1", n)
	}
	if n := metricValue(t, m, `coapgw_coap_block2_responses_total`); n < 3 {
		t.Errorf("%v Block2 responses counted, want the well-known document's blocks", n)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	recs := spoolRecords(t, dir)
	if len(recs) != 2 {
		t.Fatalf("spool holds %d records, want 2 (3 KB and 8 KB)", len(recs))
	}
	for _, r := range recs {
		if want, ok := bodies[r.ID]; !ok || !sameJSON(t, r.Payload, want) {
			t.Fatalf("record %s/%s: %d bytes, not the body sent", r.Type, r.ID, len(r.Payload))
		}
	}
}

// lastLines is the end of a long client log.
func lastLines(s string, n int) string {
	l := strings.Split(s, "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// TestBlockwiseHandCrafted speaks Block1 to the real binary block by block: a missing middle
// block gets 4.08; a retransmitted block (same datagram, same MID) gets the very same 2.31 from
// deduplication; a body without Size1 that outgrows the limit gets 4.13 before its last block;
// and the one complete body is stored once.
func TestBlockwiseHandCrafted(t *testing.T) {
	dir := t.TempDir()
	g := startGW(t, dir)
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := jsonBody(2500)
	block := func(num uint32, more bool) *coapmsg.Message {
		end := min(int(num+1)*1024, len(body))
		return c.Request(coapmsg.Confirmable, coapmsg.POST, "/sensor/hand-1", body[int(num)*1024:end],
			coapmsg.Option{Number: coapmsg.ContentFormat, Value: []byte{50}},
			coapmsg.Option{Number: coapmsg.Block1, Value: coapmsg.AppendBlock(nil, num, more, 6)})
	}
	do := func(m *coapmsg.Message) *coapmsg.Message {
		t.Helper()
		r, err := c.Do(m)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := do(block(0, true)); r.Code != coapmsg.Continue {
		t.Fatalf("block 0: %v", r.Code)
	}
	if r := do(block(2, false)); r.Code != coapmsg.RequestEntityIncomplete {
		t.Fatalf("block 2 after block 0: %v %q, want 4.08", r.Code, r.Payload)
	}
	// Again from the start, with block 1 retransmitted.
	do(block(0, true))
	b1 := block(1, true)
	raw, _ := b1.Append(nil)
	first, err := c.DoRaw(raw, b1.MID, b1.Token)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.DoRaw(raw, b1.MID, b1.Token)
	if err != nil {
		t.Fatal(err)
	}
	fb, _ := first.Append(nil)
	ab, _ := again.Append(nil)
	if first.Code != coapmsg.Continue || !bytes.Equal(fb, ab) {
		t.Fatalf("retransmitted block 1: %x, then %x; want the same 2.31", fb, ab)
	}
	if r := do(block(2, false)); r.Code != coapmsg.Changed {
		t.Fatalf("last block: %v %q", r.Code, r.Payload)
	}
	// 9,000 bytes without Size1: 4.13 at block 8, before the last (block 8 would end past 8,192).
	big := jsonBody(9000)
	r, err := c.PostBlocks("/sensor/hand-2", big, 6)
	if err != nil || r.Code != coapmsg.RequestEntityTooLarge {
		t.Fatalf("9,000 bytes block-wise: %v %+v", err, r)
	}
	m := scrape(t, g)
	if n := metricValue(t, m, `coapgw_coap_block1_total{outcome="incomplete"}`); n != 1 {
		t.Errorf("incomplete counted %v, want 1", n)
	}
	if n := metricValue(t, m, `coapgw_coap_datagrams_total{disposition="duplicate"}`); n != 1 {
		t.Errorf("duplicates counted %v, want 1", n)
	}
	// hand-2's blocks 0–7 were taken (8 × 2.31); block 8 got 4.13 and was not.
	if n := metricValue(t, m, `coapgw_coap_block1_total{outcome="continued"}`); n != 1+2+8 {
		t.Errorf("continued counted %v, want 11", n)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	recs := spoolRecords(t, dir)
	if len(recs) != 1 || recs[0].ID != "hand-1" || !sameJSON(t, recs[0].Payload, body) {
		t.Fatalf("spool holds %d records, want hand-1's body once", len(recs))
	}
}

// TestBlockwiseAiocoap: aiocoap sends a 9 KB body block-wise by itself; with --max-payload
// 16KiB it gets 2.04 and the record is stored once, whole. A GET of /.well-known/core in
// 16-byte blocks (aiocoap follows Block2) comes back whole.
func TestBlockwiseAiocoap(t *testing.T) {
	if err := exec.Command("python3", "-c", "import aiocoap").Run(); err != nil {
		if os.Getenv("COAPGW_REQUIRE_PEERS") != "" {
			t.Fatal("aiocoap not installed (pip install aiocoap)")
		}
		t.Skip("aiocoap not installed; scripts/test.sh installs it")
	}
	dir := t.TempDir()
	g := startGW(t, dir, "--max-payload", "16KiB")
	out, err := exec.Command("python3", "testdata/aiocoap_blockwise.py", g.coap.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("aiocoap client: %v\n%s", err, out)
	}
	var got struct {
		Post      string `json:"post"`
		WellKnown string `json:"well_known"`
		Payload   string `json:"well_known_payload"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &got); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	if got.Post != "2.04" || got.WellKnown != "2.05" || got.Payload != `</health>;rt="coapgw.health";ct=50` {
		t.Fatalf("aiocoap: %+v", got)
	}
	if n := metricValue(t, scrape(t, g), `coapgw_coap_block1_total{outcome="continued"}`); n != 8 {
		t.Errorf("%v blocks continued, want 8 (9,000 bytes in 1,024-byte blocks)", n)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	recs := spoolRecords(t, dir)
	if len(recs) != 1 || recs[0].ID != "aio-9k" || !sameJSON(t, recs[0].Payload, jsonBody(9000)) {
		t.Fatalf("spool holds %d records, want aio-9k's 9,000 bytes once", len(recs))
	}
}

// TestBlockwiseDTLS: over DTLS (libcoap's OpenSSL client with a per-device key) a 3 KB body goes
// block-wise too: 2.31 twice, 2.04, and the whole record reaches the thing's shadow; the
// session's blocks are reassembled by the DTLS transport's own exchange layer.
func TestBlockwiseDTLS(t *testing.T) {
	bin := lookPeer(t, "coap-client-openssl")
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "operator.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COAPGW_KEY_FILE", keyFile)
	if code, out, errs := device(t, "add", "sensor/blk-dtls", "--data-dir", dir, "--psk-text", "blk-dtls-secret-0"); code != 0 {
		t.Fatalf("device add: %d %s %s", code, out, errs)
	}
	coaps := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freeUDPPort(t)))
	g := startGW(t, dir, "--process", "local", "--coaps-addr", coaps.String())
	waitFor(t, "the start line naming the DTLS address", func() bool {
		return strings.Contains(g.stderr.String(), "coaps="+coaps.String())
	})
	body := jsonBody(3000)
	f := filepath.Join(t.TempDir(), "body.json")
	if err := os.WriteFile(f, body, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "-B", "10", "-v", "7", "-m", "post", "-t", "50", "-f", f,
		"-u", "sensor/blk-dtls", "-k", "blk-dtls-secret-0", "coaps://"+coaps.String()+"/sensor/blk-dtls").CombinedOutput()
	if strings.Count(string(out), "c:2.31") != 2 || !strings.Contains(string(out), "c:2.04") {
		t.Fatalf("3 KB over DTLS: want 2.31 twice and 2.04:\n%s", lastLines(string(out), 30))
	}
	var sh apiShadow
	waitFor(t, "the 3 KB record in the shadow", func() bool {
		return getJSON(t, g, "/api/things/blk-dtls/shadow", &sh) == 200 && len(fmt.Sprint(sh.State.Reported["pad"])) == 3000-10
	})
	if n := metricValue(t, scrape(t, g), `dtls_coapgw_coap_block1_total{outcome="completed"}`); n != 1 {
		t.Errorf("DTLS bodies completed %v, want 1", n)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}
