package processor

import "github.com/coapgw/coapgw/internal/jsonscan"

// Seed shadow keys (Config.SeedShadow, --seed-shadow; docs/migrate-from-2018.md). The 2018
// CoAP-to-AWS-IoT processor wrote every payload into state.reported merged with
//
//	{"online": "true", "uuid": "<thing name>", "type": "<thing type>"}
//
// its keys winning over the device's own of the same name; dashboards and rules built on it read
// them. With the option every thing's update carries them, stamped with the newest received_at
// of its records (so they win over the device's keys of the same records, and an older record
// never brings an older value back), whatever the sink. Without it nothing is added: the user's
// shadow is the device's keys only.

// seedKeys are the keys the 2018 processor added, in the order it wrote them.
var seedKeys = [...]string{"online", "uuid", "type"}

// seedTrue is the value of "online": the string "true", as the 2018 processor wrote it.
var seedTrue = []byte(`"true"`)

// newBatch is NewBatch with the processor's decoders, and the seed keys when configured.
func (p *Processor) newBatch(inputs []Input) *Batch {
	b := NewBatch(inputs, p.cfg.Decoders)
	if p.cfg.SeedShadow {
		addSeedKeys(b)
	}
	return b
}

// addSeedKeys sets the seed keys in every update of b (see above).
func addSeedKeys(b *Batch) {
	for i := range b.Updates {
		u := &b.Updates[i]
		// Items are in received_at order (Coalesce): the last is the newest.
		AddSeedKeys(u.Doc, u.Thing, u.Type, b.Items[u.Items[len(u.Items)-1]].Record.ReceivedAt.UnixNano())
	}
}

// AddSeedKeys sets the seed keys of the thing named thing, of type typ, in d, stamped ts (unix
// nanoseconds): what the processor adds to each update with Config.SeedShadow. The device API
// adds them to its prediction of a thing's state (ingest's shadow budget).
func AddSeedKeys(d *Doc, thing, typ string, ts int64) {
	vals := [len(seedKeys)][]byte{seedTrue, jsonscan.AppendQuoted(nil, thing), jsonscan.AppendQuoted(nil, typ)}
	for k, key := range seedKeys {
		_ = d.SetValue(key, ts, vals[k]) // strings: never refused
	}
}

// SeedKeysBound is at least what the seed keys of a thing named thing, of type typ, add to its
// rendered reported state: "online":"true","uuid":"<thing>","type":"<type>" with separators.
// Names and types are made of characters JSON does not escape.
func SeedKeysBound(thing, typ string) int { return 40 + len(thing) + len(typ) }
