package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coapgw/coapgw/internal/coapclient"
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/credential"
)

const sendUsage = `usage: coapgw send [flags] coap[s]://host[:port]/type/id [payload]

Sends one request to a gateway as a device would and prints the response's code and payload:
a CON (retransmitted after ACK_TIMEOUT 2-3 s, doubling, 4 times: RFC 7252), or with --non a NON
sent once. The payload is the argument, or read from standard input when it is "-". With a
payload the method is POST and the Content-Format 50 (JSON); without one, GET.

  coapgw send coap://127.0.0.1/sensor/dev-1 '{"temp":21.5}'
  coapgw send --identity sensor/dev-1 --psk-text <key> coaps://127.0.0.1/sensor/dev-1 '{"temp":21.5}'
  coapgw send coap://127.0.0.1/health

coaps:// (or --dtls) speaks DTLS 1.2 with a pre-shared key; the identity defaults to the path.
Exit status: 0 for a 2.xx answer, 1 for another answer or none, 2 usage error.

flags (before or after the URI):
`

// sendResult is what `coapgw send --format json` prints.
type sendResult struct {
	Code          string          `json:"code"`
	Status        string          `json:"status,omitempty"`
	MaxAge        *uint32         `json:"max_age,omitempty"`
	ContentFormat *uint32         `json:"content_format,omitempty"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadText   string          `json:"payload_text,omitempty"`
	Error         string          `json:"error,omitempty"`
}

// runSend is `coapgw send`: one request, as a device sends it.
func runSend(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("coapgw send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), sendUsage)
		fs.PrintDefaults()
	}
	useDTLS := fs.Bool("dtls", false, "speak DTLS 1.2 with a pre-shared key (implied by coaps://)")
	identity := fs.String("identity", "", "DTLS: the PSK `identity` (default: the URI's type/id)")
	pskHex := fs.String("psk-hex", os.Getenv("COAPGW_SEND_PSK_HEX"), "DTLS: the device's pre-shared key in `hex`, as coapgw device add prints it (env COAPGW_SEND_PSK_HEX)")
	pskText := fs.String("psk-text", os.Getenv("COAPGW_SEND_PSK_TEXT"), "DTLS: the device's pre-shared key as `text`, what libcoap's -k takes (env COAPGW_SEND_PSK_TEXT)")
	non := fs.Bool("non", false, "send a NON (once, no retransmission) instead of a CON")
	method := fs.String("method", "", "`method`: post, put or get (default: post with a payload, get without)")
	cfText := fs.String("content-format", "", "Content-Format `number`, or none (default: 50, JSON, with a payload, none without)")
	format := fs.String("format", "text", "output: `text` (code, then the payload) or json (one object)")
	timeout := fs.Duration("timeout", 0, "give up after this long (default: RFC 7252's MAX_TRANSMIT_WAIT, 93 s, for a CON; 2 s for a NON)")
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "coapgw send: "+format+"\n", a...)
		return 2
	}
	if len(pos) < 1 || len(pos) > 2 {
		fs.Usage()
		return 2
	}
	if *format != "text" && *format != "json" {
		return usageErr("--format: want text or json")
	}
	u, err := url.Parse(pos[0])
	if err != nil || (u.Scheme != "coap" && u.Scheme != "coaps") || u.Hostname() == "" {
		return usageErr("want a coap:// or coaps:// URI with a host, got %q", pos[0])
	}
	if u.Scheme == "coaps" {
		*useDTLS = true
	}
	port := u.Port()
	if port == "" {
		port = "5683"
		if *useDTLS {
			port = "5684"
		}
	}
	target := net.JoinHostPort(u.Hostname(), port)

	req := coapclient.Request{NON: *non, Path: coapclient.SplitPath(u.Path), ContentFormat: -1}
	for _, q := range strings.Split(u.RawQuery, "&") {
		if q != "" {
			v, _ := url.QueryUnescape(q)
			req.Options = append(req.Options, coapmsg.Option{Number: coapmsg.URIQuery, Value: []byte(v)})
		}
	}
	if len(pos) == 2 {
		req.Payload = []byte(pos[1])
		if pos[1] == "-" {
			if req.Payload, err = io.ReadAll(os.Stdin); err != nil {
				fmt.Fprintln(stderr, "coapgw send: read the payload:", err)
				return 1
			}
		}
	}
	switch strings.ToLower(*method) {
	case "":
		req.Code = coapmsg.GET
		if len(pos) == 2 {
			req.Code = coapmsg.POST
		}
	case "post":
		req.Code = coapmsg.POST
	case "put":
		req.Code = coapmsg.PUT
	case "get":
		req.Code = coapmsg.GET
	default:
		return usageErr("--method: want post, put or get")
	}
	switch *cfText {
	case "":
		if len(req.Payload) > 0 {
			req.ContentFormat = int(coapmsg.FormatJSON)
		}
	case "none":
	default:
		n, err := strconv.ParseUint(*cfText, 10, 16)
		if err != nil {
			return usageErr("--content-format: want a number from 0 to 65535, or none")
		}
		req.ContentFormat = int(n)
	}

	var psk []byte
	if *useDTLS {
		if *identity == "" {
			*identity = strings.Join(req.Path, "/")
		}
		if _, _, err := credential.SplitIdentity(*identity); err != nil {
			return usageErr("--identity: %v", err)
		}
		switch {
		case *pskHex != "" && *pskText != "":
			return usageErr("--psk-hex and --psk-text: give the key one way")
		case *pskHex != "":
			if psk, err = hex.DecodeString(*pskHex); err != nil || len(psk) == 0 {
				return usageErr("--psk-hex: not hex")
			}
		case *pskText != "":
			psk = []byte(*pskText)
		default:
			return usageErr("DTLS needs the device's key: --psk-hex or --psk-text")
		}
	}

	p := coapclient.Params{}
	if *timeout <= 0 {
		*timeout = maxTransmitWait
		if *non {
			*timeout = coapclient.AckTimeout
		}
	}
	if *non {
		p.NONTimeout = *timeout
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var conn net.Conn
	if *useDTLS {
		c, err := coapclient.DialDTLS(ctx, target, *identity, psk)
		if err != nil {
			return sendFailed(stdout, stderr, *format, err)
		}
		defer c.Close()
		conn = c
	} else {
		var d net.Dialer
		c, err := d.DialContext(ctx, "udp", target)
		if err != nil {
			return sendFailed(stdout, stderr, *format, err)
		}
		defer c.Close()
		conn = c
	}
	resp, err := coapclient.Do(ctx, conn, req, p)
	if err != nil {
		return sendFailed(stdout, stderr, *format, err)
	}
	printResponse(stdout, *format, resp)
	if resp.Code.Class() != 2 {
		return 1
	}
	return 0
}

// maxTransmitWait is RFC 7252's MAX_TRANSMIT_WAIT: the longest a CON is retransmitted for.
const maxTransmitWait = 93 * time.Second

func sendFailed(stdout, stderr io.Writer, format string, err error) int {
	if format == "json" {
		b, _ := json.Marshal(sendResult{Error: err.Error()})
		fmt.Fprintf(stdout, "%s\n", b)
	}
	fmt.Fprintln(stderr, "coapgw send:", err)
	return 1
}

func printResponse(w io.Writer, format string, m *coapmsg.Message) {
	r := sendResult{Code: m.Code.String(), Status: codeNames[m.Code]}
	if v, ok := m.Option(coapmsg.MaxAge); ok {
		if n, ok := coapmsg.Uint(v); ok {
			r.MaxAge = &n
		}
	}
	if v, ok := m.Option(coapmsg.ContentFormat); ok {
		if n, ok := coapmsg.Uint(v); ok {
			r.ContentFormat = &n
		}
	}
	if format == "text" {
		fmt.Fprintln(w, strings.TrimSpace(r.Code+" "+r.Status))
		if len(m.Payload) > 0 {
			w.Write(m.Payload)
			if m.Payload[len(m.Payload)-1] != '\n' {
				fmt.Fprintln(w)
			}
		}
		return
	}
	switch {
	case len(m.Payload) == 0:
	case json.Valid(m.Payload):
		r.Payload = m.Payload
	case utf8.Valid(m.Payload):
		r.PayloadText = string(m.Payload)
	default:
		r.PayloadText = "0x" + hex.EncodeToString(m.Payload)
	}
	b, _ := json.Marshal(r)
	fmt.Fprintf(w, "%s\n", b)
}

// codeNames are RFC 7252's (and RFC 7959's) names of the response codes a gateway sends.
var codeNames = map[coapmsg.Code]string{
	coapmsg.Created: "Created", coapmsg.Deleted: "Deleted", coapmsg.Valid: "Valid",
	coapmsg.Changed: "Changed", coapmsg.Content: "Content", coapmsg.MakeCode(2, 31): "Continue",
	coapmsg.BadRequest: "Bad Request", coapmsg.Unauthorized: "Unauthorized", coapmsg.BadOption: "Bad Option",
	coapmsg.Forbidden: "Forbidden", coapmsg.NotFound: "Not Found", coapmsg.MethodNotAllowed: "Method Not Allowed",
	coapmsg.NotAcceptable: "Not Acceptable", coapmsg.MakeCode(4, 8): "Request Entity Incomplete",
	coapmsg.MakeCode(4, 12): "Precondition Failed", coapmsg.RequestEntityTooLarge: "Request Entity Too Large",
	coapmsg.UnsupportedFormat: "Unsupported Content-Format", coapmsg.InternalServerError: "Internal Server Error",
	coapmsg.NotImplemented: "Not Implemented", coapmsg.MakeCode(5, 2): "Bad Gateway",
	coapmsg.ServiceUnavailable: "Service Unavailable", coapmsg.MakeCode(5, 4): "Gateway Timeout",
	coapmsg.ProxyingNotSupported: "Proxying Not Supported",
}
