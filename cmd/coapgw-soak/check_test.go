package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

func fakeSource(m map[string]applied) appliedSource {
	return func(_ context.Context, name string) (applied, error) { return m[name], nil }
}

func TestCheckFindsLostRecords(t *testing.T) {
	acks := map[string][]uint32{"a": {1, 2, 3}, "b": {1}, "c": {7}}
	reg := map[string]applied{
		"a": {ns: []uint32{1, 3, 4}, messages: 4, found: true}, // 2 lost, 4 applied without an ack, 3 stored twice
		"b": {ns: []uint32{1}, messages: 1, found: true},
		// c: unknown thing, its record lost
	}
	r, err := check(t.Context(), acks, fakeSource(reg), "hostile")
	if err != nil {
		t.Fatal(err)
	}
	want := checkReport{Devices: 3, Acknowledged: 5, Applied: 3, Lost: 2, Duplicates: 1, Unacked: 1,
		LostSample: []string{"a 2", "c 7"}}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("check = %+v, want %+v", r, want)
	}

	reg["a"] = applied{ns: []uint32{1, 2, 3}, messages: 3, found: true}
	reg["c"] = applied{ns: []uint32{7}, messages: 1, found: true}
	reg["hostile"] = applied{found: true}
	r, err = check(t.Context(), acks, fakeSource(reg), "hostile")
	if err != nil {
		t.Fatal(err)
	}
	if r.Lost != 0 || r.Applied != 5 || !r.Hostile {
		t.Errorf("check = %+v, want nothing lost, 5 applied, the hostile thing reported", r)
	}
}

func TestAcksRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acks.txt")
	acks := map[string][]uint32{"soak-1": {3, 1, 2}, "burst-0": {1}}
	if err := writeAcks(path, acks); err != nil {
		t.Fatal(err)
	}
	got, err := readAcks(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string][]uint32{"soak-1": {1, 2, 3}, "burst-0": {1}}; !reflect.DeepEqual(got, want) {
		t.Errorf("read %v, want %v", got, want)
	}
	if err := os.WriteFile(path, []byte("soak-1 x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readAcks(path); err == nil {
		t.Error("a malformed line was accepted")
	}
}

// exchange retransmits a CON until answered, and takes a separate response after an empty ACK
// (acknowledging it); only the response with the request's token counts.
func TestExchangeRetransmitsAndTakesSeparateResponse(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	gotACK := make(chan uint16, 1)
	go func() {
		buf := make([]byte, 2048)
		var m coapmsg.Message
		for i := 0; ; i++ {
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if m.Decode(buf[:n]) != nil {
				continue
			}
			if m.Type == coapmsg.Acknowledgement {
				gotACK <- m.MID
				continue
			}
			if i == 0 {
				continue // drop the first transmission
			}
			send := func(r coapmsg.Message) {
				b, _ := r.Append(nil)
				srv.WriteToUDP(b, from)
			}
			send(coapmsg.Message{Type: coapmsg.Acknowledgement, MID: m.MID})
			send(coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.Changed, MID: 900, Token: []byte("zzzz")}) // another request's
			send(coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.Changed, MID: 901, Token: append([]byte(nil), m.Token...)})
		}
	}()
	c, err := dialClient(srv.LocalAddr().String(), timing{ackTimeout: 50 * time.Millisecond, maxRetransmit: 4,
		nonTimeout: time.Second, separateWait: 5 * time.Second}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tok := []byte("abcd")
	r, err := c.exchange(telemetry(nil, "soak", "d", 1, 1, true, 77, tok), true, 77, tok)
	if err != nil {
		t.Fatal(err)
	}
	if r.code != coapmsg.Changed || !r.separate || r.retransmits != 1 {
		t.Errorf("exchange = %+v, want a separate 2.04 after one retransmission", r)
	}
	for _, want := range []uint16{900, 901} {
		select {
		case mid := <-gotACK:
			if mid != want {
				t.Errorf("ACK for MID %d, want %d", mid, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no ACK for the separate response %d", want)
		}
	}

	// A server that never answers: a CON is lost after MAX_RETRANSMIT retransmissions.
	srv.Close()
	r, err = c.exchange(telemetry(nil, "soak", "d", 2, 1, true, 78, tok), true, 78, tok)
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 0 || r.retransmits != 4 {
		t.Errorf("exchange with nobody = %+v, want no code after 4 retransmissions", r)
	}
}
