package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
	"unicode/utf8"

	"github.com/coapgw/coapgw/internal/config"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
)

// spoolLine is one record as `coapgw spool` prints it.
type spoolLine struct {
	Seq           uint64          `json:"seq"`
	State         string          `json:"state"` // "waiting", or "done" once applied or forwarded
	GW            string          `json:"gw"`
	ReceivedAt    time.Time       `json:"received_at"`
	Type          string          `json:"type"`
	ID            string          `json:"id"`
	ContentFormat *uint16         `json:"content_format,omitempty"`
	Peer          string          `json:"peer"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 []byte          `json:"payload_base64,omitempty"`
	Error         string          `json:"error,omitempty"`
}

const spoolUsage = `usage: coapgw spool [flags]

Prints the records stored in <data-dir>/spool, one JSON line each, oldest first, read-only (the
gateway may be running). Each line's "state" is "waiting" for a record the gateway has not yet
handed on, or "done" once it has: applied to the local registry (local mode, within milliseconds)
or accepted by the queue (--queue). Done records stay on disk until their segment is deleted.
A summary line goes to standard error.

flags:
`

// errStop ends a scan early.
var errStop = errors.New("stop")

func runSpool(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("coapgw spool", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), spoolUsage)
		fs.PrintDefaults()
	}
	dir := fs.String("data-dir", envOr(config.EnvName("data-dir"), "./data"), "data `directory` (env COAPGW_DATA_DIR)")
	waiting := fs.Bool("waiting", false, "print only the records still waiting to be applied or forwarded")
	fs.Bool("all", true, "print every record on disk, waiting or done (the default; kept for scripts)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "coapgw spool: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	spoolDir := filepath.Join(*dir, "spool")
	if _, err := os.Stat(spoolDir); err != nil {
		fmt.Fprintf(stderr, "coapgw spool: no spool in %s (--data-dir): %v\n", *dir, err)
		return 1
	}
	// Scan reads the cursor before the first record: a scan stopped there tells which
	// records are done before any is printed.
	pre, err := spool.Scan(spoolDir, true, func(spool.Entry) error { return errStop })
	if err != nil && !errors.Is(err, errStop) {
		fmt.Fprintln(stderr, "coapgw spool:", err)
		return 1
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	var done int64
	st, err := spool.Scan(spoolDir, !*waiting, func(e spool.Entry) error {
		var r record.Record
		line := spoolLine{Seq: e.Seq, State: "waiting"}
		if e.Seq <= pre.CommittedSeq {
			line.State = "done"
			done++
		}
		if err := record.Decode(e.Data, &r); err != nil {
			line.Error = err.Error()
		} else {
			line.GW, line.ReceivedAt, line.Type, line.ID, line.Peer = r.GW, r.ReceivedAt, r.Type, r.ID, r.Peer
			if r.ContentFormat != record.NoContentFormat {
				cf := r.ContentFormat
				line.ContentFormat = &cf
			}
			if json.Valid(r.Payload) && utf8.Valid(r.Payload) {
				line.Payload = r.Payload
			} else {
				line.PayloadBase64 = r.Payload
			}
		}
		return enc.Encode(line)
	})
	if err != nil {
		fmt.Fprintln(stderr, "coapgw spool:", err)
		return 1
	}
	w.Flush()
	done += st.Delivered
	fmt.Fprintf(stderr, "# %d records on disk in %d segments: %d waiting, %d done (applied or forwarded); %d corrupt regions skipped; cursor at seq %d\n",
		st.Entries+st.Delivered, st.Segments, st.Entries+st.Delivered-done, done, st.Corrupt, st.CommittedSeq)
	if *waiting && st.Delivered > 0 {
		fmt.Fprintf(stderr, "# (--waiting: the %d done records were not printed)\n", st.Delivered)
	}
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
