package main

import (
	"bufio"
	"context"
	"encoding/json"
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

func runSpool(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("coapgw spool", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data-dir", envOr(config.EnvName("data-dir"), "./data"), "data directory (env COAPGW_DATA_DIR)")
	all := fs.Bool("all", false, "print every record on disk, also those already forwarded")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	st, err := spool.Scan(filepath.Join(*dir, "spool"), *all, func(e spool.Entry) error {
		var r record.Record
		line := spoolLine{Seq: e.Seq}
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
	fmt.Fprintf(stderr, "# %d records in %d segments (%d already forwarded, %d corrupt regions skipped); cursor at seq %d\n",
		st.Entries, st.Segments, st.Delivered, st.Corrupt, st.CommittedSeq)
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
