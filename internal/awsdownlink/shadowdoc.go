package awsdownlink

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// The documents AWS IoT's Device Shadow service publishes and returns, as its documentation
// gives them (device-shadow-document.html). Values are decoded with json.Number, so that a
// number reaches the device as AWS sent it.

// deltaDoc is a message on $aws/things/{thing}/shadow/update/delta:
// {"version":N,"timestamp":T,"state":{…},"metadata":{…},"clientToken":"…"}.
type deltaDoc struct {
	Version *int64         `json:"version"`
	State   map[string]any `json:"state"`
}

// shadowState is one side of an update/documents message, or GetThingShadow's document:
// {"state":{"desired":…,"reported":…,"delta":…},"metadata":…,"version":N,"timestamp":T}.
type shadowState struct {
	State struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
		Delta    map[string]any `json:"delta"`
	} `json:"state"`
	Version *int64 `json:"version"`
}

// documentsDoc is a message on $aws/things/{thing}/shadow/update/documents:
// {"previous":{…},"current":{…},"timestamp":T,"clientToken":"…"}.
type documentsDoc struct {
	Current *shadowState `json:"current"`
}

// versionDoc is a message on $aws/things/{thing}/shadow/delete/accepted: {"version":N,"timestamp":T}.
type versionDoc struct {
	Version *int64 `json:"version"`
}

var errNoVersion = errors.New("no version")

func decode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// parseDelta parses an update/delta message: its version and state.
func parseDelta(b []byte) (int64, map[string]any, error) {
	var d deltaDoc
	if err := decode(b, &d); err != nil {
		return 0, nil, err
	}
	if d.Version == nil {
		return 0, nil, errNoVersion
	}
	return *d.Version, d.State, nil
}

// parseDocuments parses an update/documents message: the current version and the delta of
// the current state, computed as AWS computes it.
func parseDocuments(b []byte) (int64, map[string]any, error) {
	var d documentsDoc
	if err := decode(b, &d); err != nil {
		return 0, nil, err
	}
	if d.Current == nil || d.Current.Version == nil {
		return 0, nil, errNoVersion
	}
	return *d.Current.Version, computeDelta(d.Current.State.Desired, d.Current.State.Reported), nil
}

// parseShadow parses GetThingShadow's document: its version and state.delta (AWS computes it).
func parseShadow(b []byte) (int64, map[string]any, error) {
	var s shadowState
	if err := decode(b, &s); err != nil {
		return 0, nil, err
	}
	if s.Version == nil {
		return 0, nil, errNoVersion
	}
	return *s.Version, s.State.Delta, nil
}

// parseVersion parses delete/accepted's {"version":N,"timestamp":T}.
func parseVersion(b []byte) (int64, error) {
	var d versionDoc
	if err := decode(b, &d); err != nil {
		return 0, err
	}
	if d.Version == nil {
		return 0, errNoVersion
	}
	return *d.Version, nil
}

// computeDelta is AWS's delta state: the desired properties whose value differs from the
// reported one, recursively for objects (a desired object against a reported value that is not
// an object, or a missing one, is in the delta whole), arrays and other values compared whole.
func computeDelta(desired, reported map[string]any) map[string]any {
	var out map[string]any
	for k, dv := range desired {
		if dv == nil {
			continue
		}
		rv, has := reported[k]
		if dm, ok := dv.(map[string]any); ok {
			if rm, ok := rv.(map[string]any); ok && has {
				if sub := computeDelta(dm, rm); len(sub) > 0 {
					out = put(out, k, sub)
				}
				continue
			}
		} else if has && sameValue(dv, rv) {
			continue
		}
		out = put(out, k, dv)
	}
	return out
}

func put(m map[string]any, k string, v any) map[string]any {
	if m == nil {
		m = map[string]any{}
	}
	m[k] = v
	return m
}

// mergeDelta merges the properties of an update/delta message into the delta d: objects
// member by member, other values replaced.
func mergeDelta(d, patch map[string]any) map[string]any {
	out := make(map[string]any, len(d)+len(patch))
	for k, v := range d {
		out[k] = v
	}
	for k, v := range patch {
		if pm, ok := v.(map[string]any); ok {
			if dm, ok := out[k].(map[string]any); ok {
				out[k] = mergeDelta(dm, pm)
				continue
			}
		}
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}

// sameValue reports whether two decoded JSON values are equal; numbers are equal as numbers
// (1 and 1.0).
func sameValue(a, b any) bool {
	switch x := a.(type) {
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		fx, err1 := strconv.ParseFloat(string(x), 64)
		fy, err2 := strconv.ParseFloat(string(y), 64)
		return err1 == nil && err2 == nil && fx == fy
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, has := y[k]
			if !has || !sameValue(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	default:
		return a == b
	}
}

// render is what a device gets for a delta: {"state":{<delta>},"version":N} (Content-Format
// 50, the shape of the update/delta message without its metadata, as in local mode), nil for
// an empty delta. It also returns the state alone, to tell whether a change changed anything.
func render(delta map[string]any, version int64) (msg, state []byte) {
	if len(delta) == 0 {
		return nil, nil
	}
	state, err := json.Marshal(delta) // keys sorted: the same delta renders the same bytes
	if err != nil {
		return nil, nil
	}
	var b strings.Builder
	b.Grow(len(state) + 32)
	b.WriteString(`{"state":`)
	b.Write(state)
	b.WriteString(`,"version":`)
	b.WriteString(strconv.FormatInt(version, 10))
	b.WriteByte('}')
	return []byte(b.String()), state
}

// thingOf returns the thing a classic-shadow topic is about and the rest after "shadow/":
// $aws/things/{thing}/shadow/update/delta → ("{thing}", "update/delta"). Named shadows'
// topics ($aws/things/{thing}/shadow/name/{shadow}/…; coapgw's bookkeeping shadow "coapgw" in
// FIFO mode) give ok false.
func thingOf(topic string) (thing, op string, ok bool) {
	rest, ok := strings.CutPrefix(topic, "$aws/things/")
	if !ok {
		return "", "", false
	}
	thing, op, ok = strings.Cut(rest, "/shadow/")
	if !ok || thing == "" || strings.Contains(thing, "/") || strings.HasPrefix(op, "name/") {
		return "", "", false
	}
	return thing, op, true
}
