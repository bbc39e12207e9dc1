package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/coapgw/coapgw/internal/loadgen"
)

// runBench implements `coapgw bench`: it drives a fleet of virtual CoAP devices against a
// server for a fixed time and prints what it measured (internal/loadgen). The exit code is 0
// when the run completed and got responses, 1 when it failed or nothing answered, 2 for bad
// usage.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := loadgen.DefaultConfig()
	cfg.Flags(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: coapgw bench [flags]

Simulates a fleet of CoAP devices, each with its own UDP socket, posting JSON telemetry to
POST /{type}/{id} with a fixed number of requests in flight, and reports delivered messages per
second (2.04), losses, retransmissions, response codes and latency percentiles. With
--gateway-pid it also reports the server's CPU time per delivered message and peak RSS, and
with --gateway-port the kernel's drops on the server's sockets.

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
		fmt.Fprintf(stderr, "coapgw bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "coapgw bench: %v\n", err)
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
		fmt.Fprintf(stderr, "coapgw bench: %v\n", err)
		return 1
	}
	if res.Responses == 0 {
		fmt.Fprintf(stderr, "coapgw bench: no responses from %s\n", cfg.Target)
		return 1
	}
	return 0
}
