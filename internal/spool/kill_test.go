package spool

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// killChildEnv makes the test binary run killChild instead of the tests.
const killChildEnv = "COAPGW_SPOOL_KILL9_DIR"

// killChild is the process TestKill9 kills: 16 appenders write to the spool in dir as devices would
// (each waits for its acknowledgement before sending the next), and every acknowledged entry is printed
// as "seq data" only after its done callback reported success. A consumer delivers (commits) the
// entries of earlier rounds meanwhile, so cursor updates and segment deletions are killed too.
func killChild(dir string) {
	d, err := Open(dir, Options{SegmentBytes: 32 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	boundary := d.Stats().NextSeq - 1
	type ack struct {
		seq  uint64
		data []byte
	}
	acks := make(chan ack, 1<<16)
	go func() {
		w := bufio.NewWriterSize(os.Stdout, 0) // unbuffered: a line is out once written
		for a := range acks {
			fmt.Fprintf(w, "%d %s\n", a.seq, a.data)
		}
	}()
	go func() {
		for {
			es, err := d.Next(context.Background(), 256)
			if err != nil {
				fmt.Fprintln(os.Stderr, "next:", err)
				os.Exit(2)
			}
			if last := es[len(es)-1].Seq; last <= boundary {
				if err := d.Commit(last); err != nil {
					fmt.Fprintln(os.Stderr, "commit:", err)
					os.Exit(2)
				}
			}
		}
	}()
	pid := os.Getpid()
	for w := range 16 {
		go func() {
			ok := make(chan uint64, 1)
			for i := 0; ; i++ {
				data := fmt.Appendf(nil, "p%d-w%d-i%d-%s", pid, w, i, strings.Repeat("x", i%200))
				err := d.Append(data, func(seq uint64, err error) {
					if err != nil {
						fmt.Fprintln(os.Stderr, "append:", err)
						os.Exit(2)
					}
					ok <- seq
				})
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(2)
				}
				acks <- ack{<-ok, data}
			}
		}()
	}
	select {}
}

// runAndKill starts killChild on dir, SIGKILLs it a random 10-160 ms after its first
// acknowledgement, and returns the lines it printed completely ("seq data\n").
func runAndKill(t *testing.T, dir string) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), killChildEnv+"="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1<<16)
	go func() {
		defer close(lines)
		br := bufio.NewReader(stdout)
		for {
			line, err := br.ReadString('\n')
			if err != nil { // a last line without '\n' was cut by the kill: not an ack
				if err != io.EOF {
					t.Errorf("read child: %v", err)
				}
				return
			}
			lines <- line
		}
	}()
	var acks []string
	select {
	case l, ok := <-lines:
		if !ok {
			cmd.Wait()
			t.Fatalf("child exited early: %s", stderr.String())
		}
		acks = append(acks, l)
	case <-time.After(waitTimeout):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("no acknowledgement from the child")
	}
	time.Sleep(time.Duration(10+rand.IntN(150)) * time.Millisecond)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		acks = append(acks, l)
	}
	cmd.Wait()
	if s := stderr.String(); s != "" {
		t.Fatalf("child failed: %s", s)
	}
	return acks
}

func parseAck(t *testing.T, line string) (uint64, string) {
	t.Helper()
	seqStr, data, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if !ok || err != nil {
		t.Fatalf("bad line from child: %q", line)
	}
	return seq, data
}

// TestKill9 SIGKILLs a process appending under load at a random moment, several times over the same
// directory, and checks that every entry the process reported as acknowledged survived, with its data.
func TestKill9(t *testing.T) {
	dir := t.TempDir()
	acked := map[uint64]string{}
	var maxAcked uint64
	for round := range 5 {
		roundAcks := runAndKill(t, dir)
		var minRound uint64
		for _, l := range roundAcks {
			seq, data := parseAck(t, l)
			if _, dup := acked[seq]; dup {
				t.Fatalf("round %d: seq %d acknowledged twice", round, seq)
			}
			if seq <= maxAcked {
				t.Fatalf("round %d: seq %d reused (an earlier round acknowledged up to %d)", round, seq, maxAcked)
			}
			acked[seq] = data
			if minRound == 0 || seq < minRound {
				minRound = seq
			}
		}
		for s := range acked {
			maxAcked = max(maxAcked, s)
		}

		// Reopen as the restarted gateway would and find every acknowledged entry.
		d, err := Open(dir, Options{SegmentBytes: 32 << 10})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		st := d.Stats()
		es := readN(t, d, int(st.Depth))
		readNone(t, d)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if st.CommittedSeq >= minRound {
			t.Fatalf("round %d: cursor %d covers this round's entries (from %d); the child only delivers earlier ones",
				round, st.CommittedSeq, minRound)
		}
		got := make(map[uint64]string, len(es))
		for i, e := range es {
			if i > 0 && e.Seq <= es[i-1].Seq {
				t.Fatalf("round %d: seq %d after %d", round, e.Seq, es[i-1].Seq)
			}
			got[e.Seq] = string(e.Data)
		}
		lost := 0
		for seq, data := range acked {
			if seq <= st.CommittedSeq {
				continue // delivered
			}
			g, ok := got[seq]
			if !ok {
				lost++
				t.Errorf("round %d: acknowledged seq %d lost", round, seq)
			} else if g != data {
				t.Errorf("round %d: seq %d: data %q, want %q", round, seq, g, data)
			}
		}
		t.Logf("round %d: %d acknowledged this round, %d on disk, cursor %d, %d segments, %d corrupt at open, lost %d",
			round, len(roundAcks), len(es), st.CommittedSeq, st.Segments, st.Corrupt, lost)
		if t.Failed() {
			return
		}
	}
}

// TestKill9ThenLostTail: even when the entries last acknowledged before a kill are destroyed
// afterwards (the disk lost the tail of the last segment), the restarted spool does not hand out
// their sequence numbers again: they may already be downstream, keyed by gateway and seq.
func TestKill9ThenLostTail(t *testing.T) {
	dir := t.TempDir()
	var maxAcked uint64
	for _, l := range runAndKill(t, dir) {
		seq, _ := parseAck(t, l)
		maxAcked = max(maxAcked, seq)
	}
	firsts, err := listSegments(dir)
	if err != nil || len(firsts) == 0 {
		t.Fatalf("segments: %v, %v", firsts, err)
	}
	// Keep only the first frame of the last segment.
	last := firsts[len(firsts)-1]
	var cut int64
	dec, _, err := scanSegmentFile(dir, last, 0, func(_ uint64, data []byte, off int64) {
		if off == 0 {
			cut = int64(frameHeaderSize + len(data))
		}
	})
	if err != nil || dec.frames < 2 {
		t.Skipf("last segment has %d frames (%v); nothing to destroy", dec.frames, err)
	}
	if err := os.Truncate(segmentPath(dir, last), cut); err != nil {
		t.Fatal(err)
	}
	d := openT(t, dir, Options{})
	r := appendWait(t, d, []byte("after"))
	if r.err != nil || r.seq <= maxAcked {
		t.Fatalf("append after restart: %+v; acknowledged seqs went up to %d", r, maxAcked)
	}
}
