package registry

import (
	"errors"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestDeleteThing: deleting a thing removes its row, shadow, history (chunks, log rows and the
// in-memory tail) and credential, and the totals; the other thing keeps all of it; a new thing
// that gets the deleted one's row id (SQLite reuses the highest) starts with no history, in the
// same process and after a reopen; the name can be used again, with another type.
func TestDeleteThing(t *testing.T) {
	for _, reopen := range []bool{false, true} {
		t.Run(fmt.Sprintf("reopen=%v", reopen), func(t *testing.T) { testDeleteThing(t, reopen) })
	}
}

func testDeleteThing(t *testing.T, reopen bool) {
	e := newEnv(t, Options{HistoryMaxPoints: 100, logMax: 7})
	for i := range 20 { // a and b interleaved, so log rows and chunks hold both
		e.send(rec("sensor", "a", float64(i), fmt.Sprintf(`{"temp":%d}`, 100+i)), rec("sensor", "b", float64(i), fmt.Sprintf(`{"temp":%d}`, i)))
	}
	if err := e.r.AddCredential(t.Context(), "sensor", "b", []byte("sealed")); err != nil {
		t.Fatal(err)
	}
	gen0, _ := e.r.CredentialGeneration(t.Context())
	if _, err := e.desire("b", `{"state":{"desired":{"temp":5}}}`); err != nil || e.delta("b") == "" {
		t.Fatalf("desired state of b: %v, delta %q", err, e.delta("b"))
	}
	var histBefore int64
	e.r.rdb.QueryRow(`SELECT history_bytes FROM totals`).Scan(&histBefore)

	if err := e.r.DeleteThing(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	if reopen {
		e.reopen()
	}
	if _, err := e.r.Thing(t.Context(), "b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Thing(b): %v, want ErrNotFound", err)
	}
	if _, err := e.r.Shadow(t.Context(), "b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Shadow(b): %v, want ErrNotFound", err)
	}
	if d := e.delta("b"); d != "" {
		t.Errorf("b's delta after the deletion: %s", d)
	}
	var desiredRows int
	e.r.rdb.QueryRow(`SELECT count(*) FROM desired`).Scan(&desiredRows)
	if desiredRows != 0 {
		t.Errorf("%d desired rows after the deletion, want 0 (a new thing given b's id would inherit it)", desiredRows)
	}
	if _, err := e.r.Credential(t.Context(), "sensor/b"); !errors.Is(err, ErrNoCredential) {
		t.Errorf("credential of b: %v", err)
	}
	if gen, _ := e.r.CredentialGeneration(t.Context()); gen == gen0 {
		t.Error("the credential generation did not move: a gateway would keep the deleted key")
	}
	hist, err := e.r.History(t.Context(), "a", HistoryQuery{})
	if err != nil || len(hist) != 1 || len(hist[0].Points) != 20 {
		t.Errorf("a's history %+v %v, want its 20 points", hist, err)
	}
	c, err := e.r.Counts(t.Context())
	if err != nil || c.Things != 1 || c.Messages != 20 || c.ThingTypes != 1 {
		t.Errorf("counts %+v %v, want 1 thing, 20 messages, the type kept", c, err)
	}
	var histAfter int64
	e.r.rdb.QueryRow(`SELECT history_bytes FROM totals`).Scan(&histAfter)
	if histAfter >= histBefore || float64(histAfter) != testutil.ToFloat64(e.r.w.m.historyBytes) {
		t.Errorf("history bytes %d before, %d after (metric %v)", histBefore, histAfter, testutil.ToFloat64(e.r.w.m.historyBytes))
	}

	// c takes b's row id; it must not inherit b's history, before or after compaction.
	e.send(rec("sensor", "c", 500, `{"temp":-1}`))
	for round := range 2 {
		hist, err = e.r.History(t.Context(), "c", HistoryQuery{})
		if err != nil || len(hist) != 1 || len(hist[0].Points) != 1 || hist[0].Points[0].V != -1 {
			t.Errorf("round %d: c's history %+v %v, want its one point", round, hist, err)
		}
		for i := range 20 {
			e.send(rec("sensor", "a", float64(600+i), `{"temp":1}`))
		}
	}
	e.send(rec("meter", "b", 700, `{"kwh":7}`))
	if th := e.thing("b"); th.Type != "meter" || th.Messages != 1 {
		t.Errorf("b again: %+v", th)
	}
	if got := e.reported("b"); got != `{"kwh":7}` {
		t.Errorf("b again reports %s", got)
	}
	if err := e.r.DeleteThing(t.Context(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteThing(nope): %v, want ErrNotFound", err)
	}
}
