package processor_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processor/spoolsource"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/registry"
	"github.com/coapgw/coapgw/internal/spool"
)

// crashChildEnv makes the test binary run crashChild instead of the tests.
const crashChildEnv = "COAPGW_PROCESSOR_CRASH_DIR"

// crashChild is the process TestCrashExactlyOnce kills: the local driver (Run over the disk spool
// in dir/spool, into the registry dir/registry.db) in small batches, so kills land between and
// inside many transactions. It prints "drained" and exits 0 once the spool is fully consumed.
func crashChild(dir string) {
	fail := func(what string, err error) {
		fmt.Fprintln(os.Stderr, what+":", err)
		os.Exit(2)
	}
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Options{})
	if err != nil {
		fail("open spool", err)
	}
	reg, err := registry.Open(filepath.Join(dir, "registry.db"), registry.Options{})
	if err != nil {
		fail("open registry", err)
	}
	p, err := processor.New(processor.Config{BatchSize: 250}, reg, nil, nil)
	if err != nil {
		fail("new processor", err)
	}
	go func() {
		for sp.Stats().Depth != 0 {
			time.Sleep(2 * time.Millisecond)
		}
		fmt.Println("drained")
		os.Exit(0)
	}()
	if err := p.Run(context.Background(), spoolsource.New(sp)); err != nil {
		fail("run", err)
	}
}

// TestCrashExactlyOnce fills a disk spool with records, then runs the processor over it into a
// registry file in a child process that is SIGKILLed at random moments and restarted, until the
// spool is drained. Every record must be reflected exactly once: message counts, history points,
// and shadows equal to each thing's newest record (some records arrive out of order).
func TestCrashExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	dir := t.TempDir()
	const things, perThing = 150, 200
	n := things * perThing
	type want struct {
		count  int
		lastAt time.Time
		last   int
	}
	wants := map[string]*want{}
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	acked := make(chan error, n)
	for i := range n {
		id := fmt.Sprintf("dev-%03d", i%things)
		ts := at(float64(i) / 10)
		if i%7 == 3 {
			ts = ts.Add(-2 * time.Second) // delivered after newer records of the same thing
		}
		w := wants[id]
		if w == nil {
			w = &want{}
			wants[id] = w
		}
		w.count++
		if ts.After(w.lastAt) {
			w.lastAt, w.last = ts, i
		}
		e := processortest.Entry(t, 0, processortest.Rec("gw1", "sensor", id, ts, fmt.Sprintf(`{"n":%d,"env":{"i":%d}}`, i, i%10)))
		if err := sp.Append(e.Data, func(_ uint64, err error) { acked <- err }); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		if err := <-acked; err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	kills := 0
	for round := 0; ; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		drained := make(chan bool, 1)
		go func() {
			line, _ := bufio.NewReader(stdout).ReadString('\n')
			drained <- line == "drained\n"
		}()
		if round < 40 {
			time.Sleep(time.Duration(5+rand.IntN(75)) * time.Millisecond)
			cmd.Process.Kill()
		}
		waitErr := cmd.Wait()
		if <-drained {
			break
		}
		if s := stderr.String(); s != "" {
			t.Fatalf("child failed: %s", s)
		}
		if round >= 40 {
			t.Fatalf("child did not drain the spool: %v", waitErr)
		}
		kills++
	}
	t.Logf("%d records, child killed %d times", n, kills)
	if kills < 3 {
		t.Logf("only %d kills landed before the spool was drained", kills)
	}

	reg, err := registry.Open(filepath.Join(dir, "registry.db"), registry.Options{Now: func() time.Time { return at(0) }})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	ctx := t.Context()
	c, err := reg.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Messages != int64(n) || c.Things != things || c.SetAside != 0 {
		t.Errorf("counts %+v, want %d messages over %d things", c, n, things)
	}
	for id, w := range wants {
		th, err := reg.Thing(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if th.Messages != int64(w.count) {
			t.Errorf("%s: %d messages, want %d", id, th.Messages, w.count)
		}
		doc, err := reg.Shadow(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var sh struct {
			State struct {
				Reported struct{ N int } `json:"reported"`
			} `json:"state"`
		}
		if err := json.Unmarshal(doc, &sh); err != nil {
			t.Fatal(err)
		}
		if sh.State.Reported.N != w.last {
			t.Errorf("%s: shadow n = %d, want %d (its newest record)", id, sh.State.Reported.N, w.last)
		}
		hist, err := reg.History(ctx, id, registry.HistoryQuery{Property: "n"})
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) != 1 || len(hist[0].Points) != w.count {
			t.Errorf("%s: history of n has %v series / points, want %d points", id, len(hist), w.count)
		}
	}
}
