// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package dtls

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/protocol"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/protocol/handshake"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/protocol/recordlayer"
	"github.com/stretchr/testify/require"
)

// statelessFront is a server socket whose first datagram has been read by the caller (the
// ClientHello with a valid cookie): ReadFrom returns it first. It drops the first dropWrites
// datagrams the server writes (a lost flight) and keeps every datagram written.
type statelessFront struct {
	net.PacketConn
	mu         sync.Mutex
	first      []byte
	from       net.Addr
	dropWrites int
	written    [][]byte
}

func (f *statelessFront) ReadFrom(b []byte) (int, net.Addr, error) {
	f.mu.Lock()
	if first := f.first; first != nil {
		f.first = nil
		f.mu.Unlock()

		return copy(b, first), f.from, nil
	}
	f.mu.Unlock()

	return f.PacketConn.ReadFrom(b)
}

func (f *statelessFront) WriteTo(b []byte, addr net.Addr) (int, error) {
	f.mu.Lock()
	f.written = append(f.written, bytes.Clone(b))
	drop := f.dropWrites > 0
	if drop {
		f.dropWrites--
	}
	f.mu.Unlock()
	if drop {
		return len(b), nil
	}

	return f.PacketConn.WriteTo(b, addr)
}

// readClientHello reads a datagram holding one unfragmented ClientHello record.
func readClientHello(t *testing.T, pc net.PacketConn) ([]byte, net.Addr, recordlayer.Header, handshake.Header, *handshake.MessageClientHello) {
	t.Helper()
	buf := make([]byte, 8192)
	require.NoError(t, pc.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, from, err := pc.ReadFrom(buf)
	require.NoError(t, err)
	var rec recordlayer.Header
	require.NoError(t, rec.Unmarshal(buf[:n]))
	body := buf[recordlayer.FixedHeaderSize:n]
	var hdr handshake.Header
	require.NoError(t, hdr.Unmarshal(body))
	require.Equal(t, handshake.TypeClientHello, hdr.Type)
	hello := &handshake.MessageClientHello{}
	require.NoError(t, hello.Unmarshal(body[handshake.HeaderLength:]))
	require.NoError(t, pc.SetReadDeadline(time.Time{}))

	return buf[:n], from, rec, hdr, hello
}

// TestHelloVerified runs the cookie exchange outside the server Conn, as a stateless server
// does, and hands the Conn the second ClientHello (message_seq 1): with WithHelloVerified
// the handshake completes (the transcript covers the ServerHello's message_seq, so a wrong
// number fails Finished), also when the server's first flight is lost and the client
// retransmits its ClientHello. With InsecureSkipVerifyHello alone, the Conn waits for a
// ClientHello at message_seq 0 and the handshake never completes.
func TestHelloVerified(t *testing.T) {
	for _, tc := range []struct {
		name       string
		verified   bool
		dropWrites int
	}{
		{name: "verified", verified: true},
		{name: "verified, first server flight lost", verified: true, dropWrites: 1},
		{name: "skip verify only", verified: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testHelloVerified(t, tc.verified, tc.dropWrites)
		})
	}
}

func testHelloVerified(t *testing.T, verified bool, dropWrites int) {
	t.Helper()
	srv, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = srv.Close() }()
	cli, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = cli.Close() }()

	psk := func([]byte) ([]byte, error) { return []byte{0xAB, 0xC1, 0x23}, nil }
	interval := WithFlightInterval(100 * time.Millisecond)
	suites := WithCipherSuites(TLS_PSK_WITH_AES_128_CCM_8)
	client, err := ClientWithOptions(cli, srv.LocalAddr(), WithPSK(psk), WithPSKIdentityHint([]byte("dev")), suites, interval)
	require.NoError(t, err)
	defer func() { _ = client.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	clientDone := make(chan error, 1)
	go func() { clientDone <- client.HandshakeContext(ctx) }()

	// The stateless cookie exchange: the first ClientHello is answered with a
	// HelloVerifyRequest that carries its record sequence number.
	_, from, rec1, hdr1, hello1 := readClientHello(t, srv)
	require.Equal(t, uint16(0), hdr1.MessageSequence)
	require.Empty(t, hello1.Cookie)
	cookie := []byte("0123456789abcdef")
	hvr := &recordlayer.RecordLayer{
		Header: recordlayer.Header{Version: protocol.Version1_2, SequenceNumber: rec1.SequenceNumber},
		Content: &handshake.Handshake{Message: &handshake.MessageHelloVerifyRequest{
			Version: protocol.Version1_2, Cookie: cookie,
		}},
	}
	raw, err := hvr.Marshal()
	require.NoError(t, err)
	_, err = srv.WriteTo(raw, from)
	require.NoError(t, err)

	hello2Raw, from, rec2, hdr2, hello2 := readClientHello(t, srv)
	require.Equal(t, uint16(1), hdr2.MessageSequence)
	require.Equal(t, cookie, hello2.Cookie)
	require.Greater(t, rec2.SequenceNumber, rec1.SequenceNumber)

	front := &statelessFront{PacketConn: srv, first: hello2Raw, from: from, dropWrites: dropWrites}
	opts := []ServerOption{WithPSK(psk), suites, interval}
	if verified {
		opts = append(opts, WithHelloVerified(hdr2.MessageSequence, rec2.SequenceNumber))
	} else {
		opts = append(opts, WithInsecureSkipVerifyHello(true))
	}
	server, err := ServerWithOptions(front, from, opts...)
	require.NoError(t, err)
	defer func() { _ = server.Close() }()
	serverErr := server.HandshakeContext(ctx)
	clientErr := <-clientDone
	if !verified {
		require.Error(t, serverErr)
		require.Error(t, clientErr)
		front.mu.Lock()
		require.Empty(t, front.written, "no ServerHello for a ClientHello at message_seq 1")
		front.mu.Unlock()

		return
	}
	require.NoError(t, serverErr)
	require.NoError(t, clientErr)

	// The server's first record follows the HelloVerifyRequest: its ServerHello has the
	// ClientHello's message_seq and record sequence number.
	front.mu.Lock()
	first := front.written[0]
	front.mu.Unlock()
	var rec recordlayer.Header
	require.NoError(t, rec.Unmarshal(first))
	require.Equal(t, rec2.SequenceNumber, rec.SequenceNumber)
	var hdr handshake.Header
	require.NoError(t, hdr.Unmarshal(first[recordlayer.FixedHeaderSize:]))
	require.Equal(t, handshake.TypeServerHello, hdr.Type)
	require.Equal(t, uint16(1), hdr.MessageSequence)

	// The session works both ways.
	_, err = client.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 64)
	require.NoError(t, server.SetReadDeadline(time.Now().Add(3*time.Second)))
	n, err := server.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "ping", string(buf[:n]))
	_, err = server.Write([]byte("pong"))
	require.NoError(t, err)
	require.NoError(t, client.SetReadDeadline(time.Now().Add(3*time.Second)))
	n, err = client.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "pong", string(buf[:n]))
}

func TestHelloVerifiedOptionRange(t *testing.T) {
	_, err := buildServerConfig(WithHelloVerified(1, recordlayer.MaxSequenceNumber+1))
	require.ErrorIs(t, err, errSequenceNumberOverflow)
}
