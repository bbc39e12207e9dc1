// Command coapgw-bench drives a fleet of virtual CoAP devices against a CoAP server for a fixed
// time and prints what it measured (internal/loadgen; docs/benchmarks.md). It is a separate
// binary so the load generator is not linked into the gateway.
//
//	coapgw-bench [flags]
//
// The exit code is 0 when the run completed and got responses, 1 when it failed, nothing
// answered or (with --dtls) no handshake succeeded, 2 for bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/coapgw/coapgw/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("coapgw-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := loadgen.DefaultConfig()
	cfg.Flags(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: coapgw-bench [flags]

Simulates a fleet of CoAP devices, each with its own UDP socket, posting JSON telemetry to
POST /{type}/{id} (or, with --method and --path, e.g. PUT /example_data) with a fixed number of
requests in flight, and reports delivered messages per second (2.04), losses, retransmissions,
response codes and latency percentiles. With --gateway-pid it also reports the server's CPU time
per delivered message and peak RSS, and with --gateway-port the kernel's drops on the server's
sockets.

With --dtls every device first performs a DTLS 1.2 PSK handshake as identity {type}/{id-prefix}{n}
(one key for all with --psk or --psk-hex, or a key derived per device from --fleet-key-hex), at most
--handshake-concurrency at once, and then sends its requests over its session. The report adds
handshakes per second, failures, handshake latency and, with --gateway-pid, the server's CPU per
handshake and RSS per session.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "coapgw-bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "coapgw-bench: %v\n", err)
		return 2
	}
	res, err := loadgen.Run(ctx, cfg)
	if res != nil {
		if cfg.JSON {
			if werr := res.WriteJSON(stdout); werr != nil && err == nil {
				err = werr
			}
		} else {
			res.WriteText(stdout)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "coapgw-bench: %v\n", err)
		return 1
	}
	if res.DTLS != nil && res.DTLS.Handshakes == 0 {
		fmt.Fprintf(stderr, "coapgw-bench: no DTLS handshake with %s succeeded\n", cfg.Target)
		return 1
	}
	if res.Responses == 0 {
		fmt.Fprintf(stderr, "coapgw-bench: no responses from %s\n", cfg.Target)
		return 1
	}
	return 0
}
