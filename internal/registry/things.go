package registry

import (
	"database/sql"
	"errors"
	"fmt"

	"github.com/coapgw/coapgw/internal/processor"
)

type thingState struct {
	id                  int64
	typeID              int64
	firstSeen, lastSeen int64
	first               int64 // the stored first_seen
	seen                int64 // the stored seen column: lastSeen in whole seconds, when last written
	counted             int64 // the stored counted column: messages, when last written
	messages, version   int64
	doc                 *processor.Doc
}

func (a *applyTx) saveThing(u *processor.Update, th *thingState, isNew, changed bool) error {
	a.touched = append(a.touched, u.Thing)
	if isNew {
		a.w.buf = th.doc.AppendBinary(a.w.buf[:0])
		th.seen, th.first, th.counted = seenSecond(th.lastSeen), th.firstSeen, th.messages
		var err error
		th.id, err = a.insertID(a.st.insThing, u.Thing, th.typeID, th.firstSeen, th.lastSeen,
			th.seen, th.messages, th.messages, th.version, a.w.buf)
		if err != nil {
			return fmt.Errorf("insert thing %s: %w", u.Thing, err)
		}
		if _, err := a.st.incType.ExecContext(a.ctx, th.typeID); err != nil {
			return fmt.Errorf("count thing type: %w", err)
		}
		a.newThings++
		a.w.things[u.Thing] = th
		return nil
	}
	var err error
	if changed {
		a.w.buf = th.doc.AppendBinary(a.w.buf[:0])
		_, err = a.st.updThing.ExecContext(a.ctx, th.lastSeen, th.messages, th.version, a.w.buf, th.id)
	} else {
		_, err = a.st.updThingMeta.ExecContext(a.ctx, th.lastSeen, th.messages, th.id)
	}
	if err != nil {
		return fmt.Errorf("update thing %s: %w", u.Thing, err)
	}
	// The indexed columns are written only when they change (SQLite updates an index whenever
	// its column is set, to the same value too).
	if s := seenSecond(th.lastSeen); s != th.seen || stale(th.counted, th.messages) {
		if _, err := a.st.updSeen.ExecContext(a.ctx, s, th.messages, th.id); err != nil {
			return fmt.Errorf("update thing %s: %w", u.Thing, err)
		}
		th.seen, th.counted = s, th.messages
	}
	if th.firstSeen != th.first {
		if _, err := a.st.updFirst.ExecContext(a.ctx, th.firstSeen, th.id); err != nil {
			return fmt.Errorf("update thing %s: %w", u.Thing, err)
		}
		th.first = th.firstSeen
	}
	return nil
}

// seenSecond is the seen column for a last_seen: whole seconds. The things list is ordered by
// it, so its indexes change at most once a second per thing, not with every record; counted,
// the messages count the list sorts by, is written with it.
func seenSecond(lastSeen int64) int64 { return lastSeen / 1e9 }

// stale reports whether the counted column (counted) lags the messages count by more than 16
// records and a sixteenth: then it is written even within the same second, so that a thing that
// sent a burst within one second and went quiet is sorted within 16 records or 6% of its count,
// and a busy thing's index entry moves once a second and at most once per 6% of growth.
func stale(counted, messages int64) bool { return messages-counted > max(16, counted/16) }

// thing returns the thing's state from memory or the database, nil if it does not exist.
func (a *applyTx) thing(name string) (*thingState, error) {
	if th := a.w.things[name]; th != nil {
		return th, nil
	}
	th := &thingState{}
	var blob []byte
	err := a.st.selThing.QueryRowContext(a.ctx, name).Scan(&th.id, &th.typeID, &th.firstSeen, &th.lastSeen,
		&th.seen, &th.counted, &th.messages, &th.version, &blob)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load thing %s: %w", name, err)
	}
	th.first = th.firstSeen
	if th.doc, err = decodeShadow(blob); err != nil {
		return nil, fmt.Errorf("load thing %s: %w", name, err)
	}
	if err := a.learnType(th.typeID); err != nil {
		return nil, fmt.Errorf("load thing %s: %w", name, err)
	}
	a.w.things[name] = th
	a.touched = append(a.touched, name)
	return th, nil
}

func (a *applyTx) thingType(name string) (int64, error) {
	if id, ok := a.w.types[name]; ok {
		return id, nil
	}
	// An upsert: another process (coapgw device add) may have created the type since it was
	// loaded.
	var id int64
	if err := a.st.insType.QueryRowContext(a.ctx, name, a.now).Scan(&id); err != nil {
		return 0, fmt.Errorf("create thing type %s: %w", name, err)
	}
	a.w.types[name], a.w.tnames[id] = id, name
	a.newTypes = append(a.newTypes, name)
	return id, nil
}

// insertID runs an INSERT statement of the transaction and returns the id of the row it added.
func (a *applyTx) insertID(st *sql.Stmt, args ...any) (int64, error) {
	res, err := st.ExecContext(a.ctx, args...)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}
