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
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coapgw/coapgw/internal/registry"
)

// applied is what the registry says a device's records were: the values of property n of every
// record in its history, and its message count. found is false for an unknown thing.
type applied struct {
	ns       []uint32
	messages int64
	found    bool
}

// appliedSource looks up what was applied for a device.
type appliedSource func(ctx context.Context, name string) (applied, error)

// checkReport is what check prints.
type checkReport struct {
	Devices      int      `json:"devices"`
	Acknowledged int      `json:"acknowledged"`
	Applied      int      `json:"applied"`    // acknowledged records found in the registry
	Lost         int      `json:"lost"`       // acknowledged, not found
	Duplicates   int64    `json:"duplicates"` // messages counted beyond the distinct records applied
	Unacked      int      `json:"applied_unacknowledged"`
	LostSample   []string `json:"lost_sample,omitempty"` // up to 20 "name n"
	Hostile      bool     `json:"hostile_stored"`        // a hostile datagram's thing exists
}

// check compares acks (name → acknowledged n values) with what src says was applied. The thing
// named hostile must not exist (hostile datagrams address it; none may be stored).
func check(ctx context.Context, acks map[string][]uint32, src appliedSource, hostile string) (checkReport, error) {
	var r checkReport
	names := make([]string, 0, len(acks))
	for name := range acks {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		a, err := src(ctx, name)
		if err != nil {
			return r, fmt.Errorf("device %s: %w", name, err)
		}
		have := make(map[uint32]bool, len(a.ns))
		for _, n := range a.ns {
			have[n] = true
		}
		acked := map[uint32]bool{}
		for _, n := range acks[name] {
			if acked[n] {
				continue
			}
			acked[n] = true
			r.Acknowledged++
			if have[n] {
				r.Applied++
				continue
			}
			r.Lost++
			if len(r.LostSample) < 20 {
				r.LostSample = append(r.LostSample, name+" "+strconv.FormatUint(uint64(n), 10))
			}
		}
		for n := range have {
			if !acked[n] {
				r.Unacked++
			}
		}
		r.Duplicates += a.messages - int64(len(have))
	}
	r.Devices = len(names)
	if hostile != "" {
		a, err := src(ctx, hostile)
		if err != nil {
			return r, fmt.Errorf("device %s: %w", hostile, err)
		}
		r.Hostile = a.found
	}
	return r, nil
}

// registrySource reads applied records from the local registry.
func registrySource(reg *registry.Registry) appliedSource {
	return func(ctx context.Context, name string) (applied, error) {
		th, err := reg.Thing(ctx, name)
		if errors.Is(err, registry.ErrNotFound) {
			return applied{}, nil
		}
		if err != nil {
			return applied{}, err
		}
		series, err := reg.History(ctx, name, registry.HistoryQuery{Property: "n", Limit: 1 << 30})
		if err != nil {
			return applied{}, err
		}
		a := applied{messages: th.Messages, found: true}
		for _, s := range series {
			for _, p := range s.Points {
				a.ns = append(a.ns, uint32(p.V))
			}
		}
		return a, nil
	}
}

// readAcks reads "name n" lines.
func readAcks(path string) (map[string][]uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	acks := map[string][]uint32{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		name, ns, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.ParseUint(ns, 10, 32)
		if !ok || err != nil || name == "" {
			return nil, fmt.Errorf("%s:%d: want \"name n\", got %q", path, line, sc.Text())
		}
		acks[name] = append(acks[name], uint32(n))
	}
	return acks, sc.Err()
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("coapgw-soak check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "data", "the stopped gateway's data directory (its registry.db)")
	acksPath := fs.String("acks", "acks.txt", "acknowledged records, as coapgw-soak load wrote them")
	hostile := fs.String("hostile-thing", "hostile", "a thing hostile datagrams name, which must not exist")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	acks, err := readAcks(*acksPath)
	if err != nil {
		fmt.Fprintf(stderr, "coapgw-soak check: %v\n", err)
		return 1
	}
	reg, err := registry.Open(filepath.Join(*dataDir, "registry.db"), registry.Options{
		HistoryMaxPoints: 1 << 30, HistoryMaxAge: 100 * 365 * 24 * time.Hour})
	if err != nil {
		fmt.Fprintf(stderr, "coapgw-soak check: %v\n", err)
		return 1
	}
	defer reg.Close()
	r, err := check(ctx, acks, registrySource(reg), *hostile)
	if err != nil {
		fmt.Fprintf(stderr, "coapgw-soak check: %v\n", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(r)
	switch {
	case r.Lost > 0:
		fmt.Fprintf(stderr, "coapgw-soak check: %d of %d acknowledged records are not in the registry\n", r.Lost, r.Acknowledged)
		return 1
	case r.Hostile:
		fmt.Fprintf(stderr, "coapgw-soak check: thing %q exists: a hostile datagram was stored\n", *hostile)
		return 1
	case r.Acknowledged == 0:
		fmt.Fprintln(stderr, "coapgw-soak check: no acknowledged records to check")
		return 1
	}
	return 0
}
