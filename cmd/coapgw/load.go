package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/coapgw/coapgw/internal/config"
	"github.com/coapgw/coapgw/internal/ops"
)

// loadCommand is the start every configured command shares: it loads role's configuration for
// the command (prefix names it in messages, e.g. "coapgw process"), answers -h and
// --check-config, refuses stray arguments and invalid settings, and builds the logger. When done
// is true the command ends at once with code (0 after -h or --check-config, 2 for bad usage).
func loadCommand(role config.Role, prefix, name, usage string, args []string, stdout, stderr io.Writer) (cfg config.Config, log *slog.Logger, code int, done bool) {
	l, err := config.Load(role, name, usage, args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return cfg, nil, 0, true
	}
	if l == nil {
		fmt.Fprintf(stderr, "%s: %v\n", prefix, err)
		return cfg, nil, 2, true
	}
	if len(l.Args) > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", prefix, l.Args)
		return cfg, nil, 2, true
	}
	cfg = l.Config
	if err := errors.Join(err, cfg.Validate(role)); err != nil {
		fmt.Fprintf(stderr, "%s: invalid configuration:\n%v\n", prefix, err)
		return cfg, nil, 2, true
	}
	if l.CheckOnly {
		fmt.Fprintln(stdout, "# configuration is valid")
		if err := cfg.WriteYAML(stdout, role); err != nil {
			return cfg, nil, 1, true
		}
		return cfg, nil, 0, true
	}
	log, err = ops.NewLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil { // Validate checked both
		fmt.Fprintf(stderr, "%s: %v\n", prefix, err)
		return cfg, nil, 2, true
	}
	return cfg, log, 0, false
}
