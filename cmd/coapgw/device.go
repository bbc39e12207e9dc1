package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/coapgw/coapgw/internal/credential"
	"github.com/coapgw/coapgw/internal/registry"
)

const deviceUsage = `usage: coapgw device <command> [flags] [type/id]

Per-device keys, in the local registry (--data-dir), sealed with the operator key:
  add type/id      create the thing if needed and give it a credential; prints its identity and
                   PSK (a fresh random one, or --psk / --psk-text), as hex and as text
  list             list the credentials: identity, state, when created and rotated
  rotate type/id   give the thing a new PSK (a revoked credential becomes valid again)
  revoke type/id   revoke the credential: no new handshake with it; the thing still may not be
                   written over plain CoAP

Fleet keys (stateless gateways):
  key type/id      print the device's PSK derived from the fleet master key, for provisioning

Run coapgw device <command> -h for the command's flags.
Exit status: 0 done, 1 failed, 2 usage error.
`

// runDevice is `coapgw device`: it manages device credentials.
func runDevice(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, deviceUsage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, deviceUsage)
		return 0
	case "add", "rotate":
		return deviceSetKey(ctx, cmd, args, stdout, stderr)
	case "list":
		return deviceList(ctx, args, stdout, stderr)
	case "revoke":
		return deviceRevoke(ctx, args, stdout, stderr)
	case "key":
		return deviceKey(ctx, args, stdout, stderr)
	}
	fmt.Fprintf(stderr, "coapgw device: unknown command %q\n\n%s", cmd, deviceUsage)
	return 2
}

// deviceFlags are the flags every device command has.
type deviceFlags struct {
	fs      *flag.FlagSet
	dataDir *string
	keyFile *string
	name    string
}

func newDeviceFlags(cmd, synopsis string, stderr io.Writer, operatorKey bool) *deviceFlags {
	name := "coapgw device " + cmd
	d := &deviceFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError), name: name}
	d.fs.SetOutput(stderr)
	d.fs.Usage = func() {
		fmt.Fprintf(d.fs.Output(), "usage: %s %s\n\nflags (before or after the identity):\n", name, synopsis)
		d.fs.PrintDefaults()
	}
	if cmd != "key" {
		d.dataDir = d.fs.String("data-dir", envDefault("COAPGW_DATA_DIR", "./data"), "data directory holding registry.db (env COAPGW_DATA_DIR)")
	}
	if operatorKey {
		d.keyFile = d.fs.String("key-file", os.Getenv("COAPGW_KEY_FILE"),
			"file holding the operator key that seals device keys, 32 bytes as hex or base64 (env COAPGW_KEY_FILE, or the key itself in COAPGW_KEY)")
	}
	return d
}

// parse parses flags placed before or after the positional arguments and returns those, or an
// exit status (0 for -h) and false.
func (d *deviceFlags) parse(args []string, positional int) ([]string, int, bool) {
	pos, err := parseInterspersed(d.fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, 0, false
	}
	if err != nil {
		return nil, 2, false
	}
	if len(pos) != positional {
		if positional == 0 {
			fmt.Fprintf(d.fs.Output(), "%s: unexpected argument %q\n", d.name, pos[0])
		} else {
			fmt.Fprintf(d.fs.Output(), "%s: want one identity, type/id\n", d.name)
		}
		d.fs.Usage()
		return nil, 2, false
	}
	return pos, 0, true
}

func (d *deviceFlags) fail(stderr io.Writer, code int, err error) int {
	fmt.Fprintf(stderr, "%s: %v\n", d.name, err)
	return code
}

// openRegistry opens the registry in the data directory; create allows making both.
func (d *deviceFlags) openRegistry(create bool) (*registry.Registry, error) {
	path := filepath.Join(*d.dataDir, "registry.db")
	if create {
		if err := os.MkdirAll(*d.dataDir, 0o700); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no registry in %s (--data-dir): %w", *d.dataDir, err)
	}
	return registry.Open(path, registry.Options{})
}

func deviceSetKey(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) int {
	d := newDeviceFlags(cmd, "[flags] type/id", stderr, true)
	psk := d.fs.String("psk", "", "the device's PSK as hex (16 to 64 bytes) instead of a fresh random one")
	pskText := d.fs.String("psk-text", "", "the device's PSK as text (16 to 64 printable ASCII characters; what libcoap's -k takes) instead of a fresh random one")
	pos, code, ok := d.parse(args, 1)
	if !ok {
		return code
	}
	identity := pos[0]
	if _, _, err := credential.SplitIdentity(identity); err != nil {
		return d.fail(stderr, 2, err)
	}
	var key []byte
	switch {
	case *psk != "" && *pskText != "":
		return d.fail(stderr, 2, errors.New("--psk and --psk-text: give the key one way"))
	case *psk != "":
		k, err := hex.DecodeString(*psk)
		if err != nil || len(k) < credential.KeyLen || len(k) > 64 {
			return d.fail(stderr, 2, errors.New("--psk: want 16 to 64 bytes as hex"))
		}
		key = k
	case *pskText != "":
		if len(*pskText) < credential.KeyLen || len(*pskText) > 64 || !printableKey([]byte(*pskText)) {
			return d.fail(stderr, 2, errors.New("--psk-text: want 16 to 64 printable ASCII characters without spaces"))
		}
		key = []byte(*pskText)
	default:
		// A fresh key that is also text: 26 random base32 characters (130 bits), so that
		// devices whose stack takes the key as text (libcoap's -k) and those that take hex
		// can both be given it.
		key = []byte(rand.Text())
	}
	opKey, err := credential.LoadKey(*d.keyFile, os.Getenv("COAPGW_KEY"), "COAPGW_KEY", credential.OperatorKeyLen, credential.OperatorKeyLen)
	if err != nil {
		return d.fail(stderr, 2, fmt.Errorf("operator key: %w", err))
	}
	if opKey == nil {
		return d.fail(stderr, 2, errors.New("no operator key: set --key-file, COAPGW_KEY_FILE or COAPGW_KEY (32 bytes, hex or base64)"))
	}
	sealer, err := credential.NewSealer(opKey)
	if err != nil {
		return d.fail(stderr, 2, err)
	}
	reg, err := d.openRegistry(cmd == "add")
	if err != nil {
		return d.fail(stderr, 1, err)
	}
	defer reg.Close()
	l, err := credential.NewLocal(ctx, reg, sealer, credential.LocalOptions{})
	if err != nil {
		return d.fail(stderr, 1, err)
	}
	var c credential.Credential
	if cmd == "add" {
		c, err = l.Add(ctx, identity, key)
	} else {
		c, err = l.Rotate(ctx, identity, key)
	}
	if err != nil {
		return d.fail(stderr, 1, err)
	}
	if err := reg.Close(); err != nil {
		return d.fail(stderr, 1, err)
	}
	printKey(stdout, c.Identity, c.Key)
	return 0
}

// printKey prints a device's identity and key: as hex, and also as text when the key is
// printable (libcoap's clients take -k as text).
func printKey(w io.Writer, identity string, key []byte) {
	fmt.Fprintf(w, "identity %s\npsk      %s\n", identity, hex.EncodeToString(key))
	if printableKey(key) {
		fmt.Fprintf(w, "psk-text %s\n", key)
	}
}

// printableKey reports whether key is printable ASCII without spaces, so it can be typed.
func printableKey(key []byte) bool {
	for _, c := range key {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return len(key) > 0
}

func deviceList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	d := newDeviceFlags("list", "[flags]", stderr, false)
	if _, code, ok := d.parse(args, 0); !ok {
		return code
	}
	reg, err := d.openRegistry(false)
	if err != nil {
		return d.fail(stderr, 1, err)
	}
	defer reg.Close()
	list, err := reg.Credentials(ctx)
	if err != nil {
		return d.fail(stderr, 1, err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tSTATE\tCREATED\tROTATED")
	for _, c := range list {
		state := "valid"
		if !c.Revoked.IsZero() {
			state = "revoked " + c.Revoked.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Identity, state, c.Created.Format(time.RFC3339), c.Rotated.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return d.fail(stderr, 1, err)
	}
	return 0
}

func deviceRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	d := newDeviceFlags("revoke", "[flags] type/id", stderr, false)
	pos, code, ok := d.parse(args, 1)
	if !ok {
		return code
	}
	if _, _, err := credential.SplitIdentity(pos[0]); err != nil {
		return d.fail(stderr, 2, err)
	}
	reg, err := d.openRegistry(false)
	if err != nil {
		return d.fail(stderr, 1, err)
	}
	defer reg.Close()
	if err := reg.RevokeCredential(ctx, pos[0]); err != nil {
		return d.fail(stderr, 1, err)
	}
	if err := reg.Close(); err != nil {
		return d.fail(stderr, 1, err)
	}
	fmt.Fprintf(stdout, "revoked %s\n", pos[0])
	return 0
}

func deviceKey(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	d := newDeviceFlags("key", "[flags] type/id", stderr, false)
	file := d.fs.String("fleet-key-file", os.Getenv("COAPGW_FLEET_KEY_FILE"),
		"file holding the fleet master key, at least 16 bytes as hex or base64 (env COAPGW_FLEET_KEY_FILE, or the key itself in COAPGW_FLEET_KEY)")
	arn := d.fs.String("fleet-key-secret-arn", os.Getenv("COAPGW_FLEET_KEY_SECRET_ARN"),
		"AWS Secrets Manager secret holding the fleet master key (env COAPGW_FLEET_KEY_SECRET_ARN)")
	pos, code, ok := d.parse(args, 1)
	if !ok {
		return code
	}
	identity := pos[0]
	if _, _, err := credential.SplitIdentity(identity); err != nil {
		return d.fail(stderr, 2, err)
	}
	cfg := credential.Config{FleetKeyFile: *file, FleetKeySecretARN: *arn}
	if *file == "" && *arn == "" {
		cfg.FleetKey = os.Getenv("COAPGW_FLEET_KEY")
	}
	if !cfg.Fleet() {
		return d.fail(stderr, 2, errors.New("no fleet master key: set --fleet-key-file, COAPGW_FLEET_KEY_FILE, COAPGW_FLEET_KEY or --fleet-key-secret-arn"))
	}
	if err := cfg.Validate(); err != nil {
		return d.fail(stderr, 2, err)
	}
	master, err := credential.LoadMaster(ctx, cfg, func(ctx context.Context) (aws.Config, error) {
		return awsconfig.LoadDefaultConfig(ctx)
	})
	if err != nil {
		return d.fail(stderr, 1, err)
	}
	key, err := credential.DeriveKey(master, identity)
	if err != nil {
		return d.fail(stderr, 1, err)
	}
	printKey(stdout, identity, key)
	return 0
}

// parseInterspersed parses fs's flags placed before, between or after positional arguments
// and returns those. After "--" everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		if len(args) > fs.NArg() && args[len(args)-fs.NArg()-1] == "--" {
			return append(pos, fs.Args()...), nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func envDefault(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
