package sqs

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
)

// TestFIFODedupIncarnation: two spools under the same gateway id (an instance replaced by one
// that got the same host name, each with a new spool volume) give seq 1 different FIFO
// deduplication ids, so the queue does not drop the second one's records as duplicates for five
// minutes; the same record sent again from the same spool, also after a restart, keeps its id.
func TestFIFODedupIncarnation(t *testing.T) {
	const fifoURL = "https://sqs.eu-west-1.amazonaws.com/123456789012/coapgw.fifo"
	dedupID := func(incarnation string, r record.Record) string {
		t.Helper()
		p, fake := newTest(t, Config{QueueURL: fifoURL, Incarnation: incarnation})
		if _, err := p.Publish(context.Background(), []record.Record{r}); err != nil {
			t.Fatal(err)
		}
		return aws.ToString(fake.requests()[0].Entries[0].MessageDeduplicationId)
	}
	openSpool := func(dir string) *spool.Disk {
		t.Helper()
		d, err := spool.Open(dir, spool.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	r := rec(1, []byte(`{"temp":1}`))
	r.GW = "ip-10-0-1-23.eu-west-1.compute.internal"
	oldDir, newDir := t.TempDir(), t.TempDir()
	old, replacement := openSpool(oldDir), openSpool(newDir)
	first := dedupID(old.Incarnation(), r)
	second := dedupID(replacement.Incarnation(), r)
	if first == second {
		t.Fatalf("two spools under gateway id %q give seq 1 the same deduplication id %q", r.GW, first)
	}
	for _, id := range []string{first, second} {
		if !strings.HasPrefix(id, r.GW+"-") || !strings.HasSuffix(id, "-1") || len(id) > 128 || !validIDChars(id) {
			t.Errorf("deduplication id %q is not gw-incarnation-seq", id)
		}
	}
	if again := dedupID(old.Incarnation(), r); again != first {
		t.Errorf("the same record sent again got id %q, first %q", again, first)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	reopened := openSpool(oldDir)
	defer reopened.Close()
	defer replacement.Close()
	if again := dedupID(reopened.Incarnation(), r); again != first {
		t.Errorf("after a restart the same record got id %q, first %q", again, first)
	}

	// A gateway id too long for the id keeps the incarnation in the substitute.
	long := r
	long.GW = strings.Repeat("g", 200)
	if a, b := dedupID(old.Incarnation(), long), dedupID(replacement.Incarnation(), long); a == b || len(a) > 128 {
		t.Errorf("substitute ids %q and %q", a, b)
	}

	if _, err := newPublisher(Config{QueueURL: fifoURL, Incarnation: "has space"}, &fakeSQS{t: t}); err == nil {
		t.Error("an incarnation with a space was accepted")
	}
}
