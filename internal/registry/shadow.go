package registry

import (
	"fmt"

	"github.com/coapgw/coapgw/internal/processor"
)

func (a *applyTx) update(b *processor.Batch, u *processor.Update) error {
	live := a.live[:0]
	for _, i := range u.Items {
		if a.out[i].Result == 0 {
			live = append(live, i)
		}
	}
	a.live = live
	if len(live) == 0 {
		return nil
	}
	patch := u.Doc
	if len(live) != len(u.Items) {
		patch = b.Coalesce(live)
	}
	th, err := a.thing(u.Thing)
	if err != nil {
		return err
	}
	isNew := th == nil
	if isNew {
		typeID, err := a.thingType(u.Type)
		if err != nil {
			return err
		}
		th = &thingState{typeID: typeID, doc: processor.NewDoc(), firstSeen: 1<<63 - 1}
	} else if a.w.types[u.Type] != th.typeID {
		reason := fmt.Sprintf("thing %s exists with type %s", u.Thing, a.w.tnames[th.typeID])
		for _, i := range live {
			if err := a.setAside(&b.Items[i], i, reason); err != nil {
				return err
			}
		}
		return nil
	}

	changed := th.doc.Merge(patch)
	if changed && a.checkLimits(th.doc) != "" {
		// Find the records that do not fit, one by one, from the state before this batch.
		if th.doc, err = a.storedDoc(th.id); err != nil {
			return err
		}
		changed = false
		for _, i := range live {
			c := th.doc.Clone()
			if !c.Merge(b.Items[i].Doc) {
				continue
			}
			if reason := a.checkLimits(c); reason != "" {
				if err := a.setAside(&b.Items[i], i, reason); err != nil {
					return err
				}
				continue
			}
			th.doc, changed = c, true
		}
	}
	var applied int64
	for _, i := range live {
		t := b.Items[i].Record.ReceivedAt.UnixNano()
		th.firstSeen, th.lastSeen = min(th.firstSeen, t), max(th.lastSeen, t)
		if a.out[i].Result == 0 {
			a.out[i] = processor.Outcome{Result: processor.Applied}
			applied++
		}
	}
	th.messages += applied
	a.messages += applied
	if changed {
		th.version++
	}
	if err := a.saveThing(u, th, isNew, changed); err != nil {
		return err
	}
	for _, i := range live {
		if a.out[i].Result == processor.Applied {
			if err := a.history(th, &b.Items[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// storedDoc reads a thing's shadow as committed before this transaction changed it.
func (a *applyTx) storedDoc(id int64) (*processor.Doc, error) {
	if id == 0 {
		return processor.NewDoc(), nil
	}
	var blob []byte
	if err := a.st.selShadow.QueryRowContext(a.ctx, id).Scan(&blob); err != nil {
		return nil, fmt.Errorf("reload shadow: %w", err)
	}
	return decodeShadow(blob)
}

func decodeShadow(blob []byte) (*processor.Doc, error) {
	d := processor.NewDoc()
	if len(blob) == 0 {
		return d, nil
	}
	if err := d.UnmarshalBinary(blob); err != nil {
		return nil, err
	}
	return d, nil
}
