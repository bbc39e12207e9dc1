package envelope

import (
	"encoding/json"
	"errors"
	"hash/fnv"
	"io"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coapgw/coapgw/internal/record"
)

// The 2018 CoAP-to-AWS-IoT ingestor's message (docs/migrate-from-2018.md). That ingestor put
// one JSON object per request on its queue, in this key order:
//
//	{"timestamp":1530792000,"ip":"192.0.2.1","path":"/x-node/xxxx-ssss-1111-2222","method":"GET","payload":"{\"metric1\":7}"}
//
// timestamp is the Unix time in whole seconds, ip the device's address without port, path the
// request's path, method its method, payload its body as a UTF-8 string. Its processor read
// only path (the first two non-empty segments: thing type and thing name) and payload (parsed as
// a JSON object). A gateway with --envelope seed writes this shape (AppendSeed) so that such a
// consumer keeps working; coapgw's own consumers read both shapes on one queue, telling them
// apart per message (DecodeAny).

// SeedGW is the gw of a record read from a 2018 message, which names no gateway.
const SeedGW = "2018-ingestor"

// ErrNotSeed is returned by AppendSeed for a record the 2018 message cannot carry with its
// meaning: a payload other than JSON (Content-Format absent or 50), or not valid UTF-8.
var ErrNotSeed = errors.New("envelope: record cannot be carried in the 2018 message")

// AppendSeed appends the 2018 message for rec to b. It carries less than the envelope: no gw
// or seq (the idempotency key), received_at in whole seconds, no content format, the peer's
// address without its port, and "POST" as the method (records do not keep the method; a GET
// accepted with --compat seed is stored exactly as a POST).
func AppendSeed(b []byte, rec *record.Record) ([]byte, error) {
	if rec.Type == "" || rec.ID == "" {
		return b, errors.New("envelope: type and id are required")
	}
	if rec.ContentFormat != record.FormatJSON && rec.ContentFormat != record.NoContentFormat || !utf8.Valid(rec.Payload) {
		return b, ErrNotSeed
	}
	for _, f := range [...]string{rec.Type, rec.ID, rec.Peer} {
		if !utf8.ValidString(f) {
			return b, ErrNotText
		}
	}
	b = append(b, `{"timestamp":`...)
	b = strconv.AppendInt(b, rec.ReceivedAt.Unix(), 10)
	b = append(b, `,"ip":`...)
	b = appendString(b, peerAddr(rec.Peer))
	b = append(b, `,"path":`...)
	b = appendString(b, "/"+rec.Type+"/"+rec.ID)
	b = append(b, `,"method":"POST","payload":`...)
	b = appendString(b, string(rec.Payload))
	return append(b, '}'), nil
}

// peerAddr is the address of an ip:port peer, as the 2018 ingestor wrote it (no port, no
// brackets); a peer that is not ip:port is kept as it is.
func peerAddr(peer string) string {
	if ap, err := netip.ParseAddrPort(peer); err == nil {
		return ap.Addr().Unmap().String()
	}
	return peer
}

// IsSeed reports whether body looks like a 2018 message rather than an envelope: a JSON object
// with a "path" member and no "v". It reads only the top-level keys.
func IsSeed(body string) bool {
	dec := json.NewDecoder(strings.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	path := false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		switch t {
		case "v":
			return false
		case "path":
			path = true
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return false
		}
	}
	return path
}

// DecodeAny decodes an envelope or a 2018 message (IsSeed), whichever body is.
func DecodeAny(body string) (record.Record, error) {
	if IsSeed(body) {
		return DecodeSeed(body)
	}
	return Decode(body)
}

// seedMessage is the 2018 message as decoded; pointers tell a missing member from an empty one.
type seedMessage struct {
	Timestamp json.RawMessage `json:"timestamp"`
	IP        *string         `json:"ip"`
	Path      *string         `json:"path"`
	Payload   *string         `json:"payload"`
}

// DecodeSeed reads a 2018 message into a record, as the 2018 processor read it: thing type and
// name are the first two segments of path (query and fragment removed, empty segments skipped;
// other than two is an error), the payload is the payload string's bytes, to be read as JSON
// (Content-Format absent). The message has no idempotency key, so the record gets gw SeedGW and
// as seq a 64-bit FNV-1a hash of the body: the same message delivered twice has the same key.
// received_at is timestamp (whole seconds), peer is ip; method is not kept. Errors wrap
// ErrMalformed.
func DecodeSeed(body string) (record.Record, error) {
	if !utf8.ValidString(body) {
		return record.Record{}, malformed("not valid UTF-8")
	}
	var m seedMessage
	dec := json.NewDecoder(strings.NewReader(body))
	if err := dec.Decode(&m); err != nil {
		return record.Record{}, malformed("2018 message: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return record.Record{}, malformed("2018 message: data after the object")
	}
	if m.Timestamp == nil || m.Path == nil || m.Payload == nil {
		return record.Record{}, malformed("2018 message: missing timestamp, path or payload")
	}
	ts, err := strconv.ParseFloat(string(m.Timestamp), 64) // a JSON number; a string is refused
	if err != nil || ts != math.Trunc(ts) || ts < 0 || ts > 1<<33 {
		return record.Record{}, malformed("2018 message: timestamp %.32s is not whole seconds since 1970", m.Timestamp)
	}
	typ, id, err := seedPath(*m.Path)
	if err != nil {
		return record.Record{}, err
	}
	rec := record.Record{GW: SeedGW, Type: typ, ID: id, ContentFormat: record.NoContentFormat,
		ReceivedAt: time.Unix(int64(ts), 0).UTC(), Payload: []byte(*m.Payload)}
	if m.IP != nil {
		if len(*m.IP) > MaxFieldBytes {
			return record.Record{}, malformed("2018 message: ip longer than %d bytes", MaxFieldBytes)
		}
		rec.Peer = *m.IP
	}
	h := fnv.New64a()
	h.Write([]byte(body))
	rec.Seq = h.Sum64()
	return rec, nil
}

// seedPath splits a 2018 message's path into thing type and name as its processor did
// (urlparse, then the non-empty segments, exactly two).
func seedPath(p string) (typ, id string, err error) {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	var segs []string
	for _, s := range strings.Split(p, "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	if len(segs) != 2 {
		return "", "", malformed("2018 message: path %q is not /{type}/{id}", p)
	}
	for _, s := range segs {
		if len(s) > MaxFieldBytes {
			return "", "", malformed("2018 message: path segment longer than %d bytes", MaxFieldBytes)
		}
	}
	return segs[0], segs[1], nil
}
