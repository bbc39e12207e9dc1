// Command coapgw is a CoAP gateway for AWS IoT.
//
//	coapgw [serve] [flags]    run the gateway (the default)
//	coapgw spool [flags]      print the records of a data dir, one JSON line each
//	coapgw process [flags]    apply records from an SQS queue to AWS IoT (the worker)
//	coapgw drain [flags]      forward the whole spool to SQS and exit (before termination)
//	coapgw device CMD [flags] device credentials: add, list, rotate, revoke, key
//	coapgw send [flags] URI [PAYLOAD]  send one request, as a device would (CON or NON, DTLS)
//	coapgw version            the version, commit and Go version (--version: the version)
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/coapgw/coapgw/internal/config"
	"github.com/coapgw/coapgw/internal/gateway"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usage heads `coapgw --help` and `coapgw serve -h`; the serve flags follow it.
const usage = `usage: coapgw [command] [flags]

Commands:
  serve     run the gateway (the default when no command is given)
  send      send one request to a gateway as a device would: coapgw send -h
  spool     print the records of a data directory, one JSON line each
  process   apply records from an SQS queue to AWS IoT (the worker): coapgw process -h
  drain     forward the whole spool to SQS, then exit (before an instance terminates)
  device    device credentials: add, list, rotate, revoke, key (coapgw device -h)
  version   print the version, the commit and the Go version (--version: the version alone)

Every command takes -h. Exit status: 0 done, 1 failed, 2 usage error.

serve's flags (each also a COAPGW_* variable and a snake_case key in the --config file):
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 {
		switch args[0] {
		case "-version", "--version":
			fmt.Fprintln(stdout, "coapgw", gateway.Version)
			return 0
		case "version":
			printVersion(stdout)
			return 0
		case "-h", "-help", "--help", "help":
			// The whole usage on stdout: asked for, it is the command's output.
			_, _ = config.Load(config.Serve, "coapgw", usage, []string{"-h"}, os.Getenv, stdout)
			return 0
		}
		if len(args[0]) > 0 && args[0][0] != '-' {
			cmd, args = args[0], args[1:]
		}
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stdout, stderr)
	case "send":
		return runSend(ctx, args, stdout, stderr)
	case "spool":
		return runSpool(ctx, args, stdout, stderr)
	case "process":
		return runProcess(ctx, args, stdout, stderr)
	case "device":
		return runDevice(ctx, args, stdout, stderr)
	case "drain":
		return runDrain(ctx, args, stdout, stderr)
	}
	fmt.Fprintf(stderr, "coapgw: unknown command %q (serve, send, spool, process, device, drain, version, help)\n", cmd)
	return 2
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, log, code, done := loadCommand(config.Serve, "coapgw", "coapgw serve", usage, args, stdout, stderr)
	if done {
		return code
	}
	setGCDefaults(os.Getenv, cfg.DTLS.MaxSessions)
	g, err := gateway.New(cfg, log)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	if err := g.Serve(ctx); err != nil {
		log.Error("serve", "err", err)
		return 1
	}
	return 0
}
