// Command coapgw-soak is the load driver and the loss check of the soak test (scripts/soak.sh,
// make soak, docs/soak.md). It is not linked into the gateway.
//
//	coapgw-soak load  [flags]   mixed CON/NON telemetry, hostile datagrams and a burst of new
//	                            device names; writes every acknowledged (device, n) pair
//	coapgw-soak check [flags]   compares the acknowledged pairs with the registry: every record
//	                            that got a 2.04 must have been applied
//
// load: --devices devices, each with its own UDP socket, send POST /{type}/{name} every
// --interval (with jitter), CON for even device numbers and NON for odd ones, payload
// {"n":<per-device sequence>,"v":<value>}. A CON is retransmitted as RFC 7252 §4.2 says and an
// empty ACK is followed by waiting for the separate response (which is acknowledged); a NON
// waits --non-timeout for its response. A record counts as acknowledged only when a 2.04 for
// its token arrived. A share --hostile of all datagrams are hostile (garbage, bad headers, bad
// paths, invalid JSON, oversized payloads, unknown critical options, pings, option floods; see
// hostile.go) sent from sockets that are replaced now and then, so the gateway sees new source
// addresses. At --burst-at, --burst-names new device names send one CON record each, as fast as
// --burst-workers sockets allow. The gateway may be down for a while (killed and restarted):
// devices keep going, and what times out is counted, not acknowledged. At the end the
// acknowledged pairs go to --acks (one "name n" a line) and a JSON summary to stdout.
//
// check: opens the registry (<data-dir>/registry.db, the gateway stopped) and, for every
// device in --acks, reads the history of its property n; an acknowledged n that is not in it is
// a lost record. It prints a JSON summary and exits 1 when anything is lost. The gateway must
// run with --history-max-points above the records any one device sends, or retention would
// drop what the check looks for.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: coapgw-soak load|check [flags]")
		return 2
	}
	switch args[0] {
	case "load":
		return runLoad(ctx, args[1:], stdout, stderr)
	case "check":
		return runCheck(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "coapgw-soak: unknown command %q (load or check)\n", args[0])
	return 2
}
