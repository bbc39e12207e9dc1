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
	"time"

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
	var cu cleanup
	fs.StringVar(&cu.API, "clean-up", "", "after the run, delete the things it wrote (type --type, names --id-prefix*) through the gateway's HTTP API at this `address` (e.g. http://127.0.0.1:8080; local mode), once the gateway has applied them")
	fs.StringVar(&cu.TokenFile, "api-token-file", "", "with --clean-up: `file` holding the gateway's HTTP API token (default: $COAPGW_HTTP_TOKEN)")
	fs.DurationVar(&cu.Wait, "clean-up-wait", time.Minute, "with --clean-up: how long to wait for the gateway to apply what it acknowledged")
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
	if cu.API != "" && cfg.Path != "" {
		fmt.Fprintln(stderr, "coapgw-bench: --clean-up deletes the things /{type}/{id-prefix}{n} wrote; it cannot be used with --path")
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
	if cu.API != "" && res != nil {
		n, cerr := cu.run(ctx, cfg.Type, cfg.IDPrefix)
		fmt.Fprintf(stderr, "coapgw-bench: clean-up: deleted %d things of type %s named %s*\n", n, cfg.Type, cfg.IDPrefix)
		if cerr != nil && err == nil {
			err = cerr
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
