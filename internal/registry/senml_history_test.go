package registry

import (
	"fmt"
	"testing"

	"github.com/coapgw/coapgw/internal/record"
)

// TestSenMLHistory: a SenML pack of an hour of samples (one wake-up of a sleepy device) goes into
// history at the device's times, one point per reading, with its unit; the shadow gets each
// name's latest value. Before SenML, history had one point at the time the gateway received the
// message.
func TestSenMLHistory(t *testing.T) {
	e := newEnv(t, Options{logMax: 8}) // compaction runs too
	base := at(900).Unix()             // the pack arrives at at(950); its samples are older
	pack := fmt.Sprintf(`[{"bn":"dev7/","bt":%d,"bu":"Cel","n":"temp","v":20}`, base)
	for i := 1; i < 6; i++ {
		pack += fmt.Sprintf(`,{"n":"temp","t":%d,"v":%d}`, 10*i, 20+i)
	}
	pack += `,{"n":"bat","u":"V","t":50,"v":3.5},{"n":"state","vs":"ok"}]`
	r := rec("sensor", "s1", 950, pack)
	r.ContentFormat = record.FormatSenMLJSON
	e.send(r)
	e.send(rec("sensor", "s2", 951, `{"x":1}`)) // a JSON record after it, to fill the log

	h, err := e.r.History(t.Context(), "s1", HistoryQuery{})
	if err != nil || len(h) != 2 {
		t.Fatalf("history %+v, %v; want bat and temp", h, err)
	}
	bat, temp := h[0], h[1]
	if bat.Property != "dev7/bat" || bat.Unit != "V" || len(bat.Points) != 1 || !bat.Points[0].T.Equal(at(950)) {
		t.Errorf("bat: %+v", bat)
	}
	if temp.Property != "dev7/temp" || temp.Unit != "Cel" || len(temp.Points) != 6 {
		t.Fatalf("temp: %+v", temp)
	}
	for i, p := range temp.Points {
		if !p.T.Equal(at(900+10*float64(i))) || p.V != float64(20+i) {
			t.Errorf("temp point %d: %v %v, want %v %d", i, p.T, p.V, at(900+10*float64(i)), 20+i)
		}
	}
	st, err := e.r.ReportedState(t.Context(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(st.AppendState(nil)); got != `{"dev7/bat":3.5,"dev7/state":"ok","dev7/temp":25}` {
		t.Errorf("reported %s", got)
	}
}
