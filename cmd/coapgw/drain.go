package main

import (
	"context"
	"fmt"
	"io"

	"github.com/coapgw/coapgw/internal/config"
	"github.com/coapgw/coapgw/internal/gateway"
)

const drainUsage = `usage: coapgw drain [serve's flags]

Forwards every record waiting in <data-dir>/spool to the SQS queue (--queue) and exits once the
spool is empty: 0 drained, 1 not (the queue failed or a signal came first; what was forwarded
stays forwarded). Run it after "coapgw serve" has stopped (the spool's lock refuses it while serve
runs), on an instance about to be terminated, so that records acknowledged with 2.04 are not lost
with the spool volume; the Terraform module's lifecycle hook does (deploy/systemd). It takes
serve's flags and COAPGW_* variables, and uses the data dir, queue and forward settings.

serve's flags:
`

func runDrain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, log, code, done := loadCommand(config.Serve, "coapgw drain", "coapgw drain", drainUsage, args, stdout, stderr)
	if done {
		return code
	}
	res, err := gateway.Drain(ctx, cfg, log)
	if err != nil {
		log.Error("drain", "err", err, "records", res.Records, "remaining", res.Remaining)
		return 1
	}
	fmt.Fprintf(stdout, "drained %d records in %s; the spool is empty\n", res.Records, res.Took.Round(1e6))
	return 0
}
