package awsdownlink

import (
	"testing"
)

// The documents below are AWS IoT's, in the shapes its documentation gives
// (device-shadow-document.html, device-shadow-mqtt.html).

const awsDelta = `{
  "version": 7,
  "timestamp": 1764990000,
  "state": {"interval": 60, "fw": {"channel": "beta"}},
  "metadata": {"interval": {"timestamp": 1764990000}, "fw": {"channel": {"timestamp": 1764990000}}},
  "clientToken": "console-1"
}`

const awsDocuments = `{
  "previous": {
    "state": {"desired": {"interval": 60, "fw": {"channel": "beta"}}, "reported": {"interval": 30, "temp": 21.5}},
    "metadata": {"desired": {"interval": {"timestamp": 1764990000}}, "reported": {"interval": {"timestamp": 1764980000}}},
    "version": 7
  },
  "current": {
    "state": {"desired": {"interval": 60, "fw": {"channel": "beta"}}, "reported": {"interval": 60.0, "temp": 21.5, "fw": {"channel": "stable"}}},
    "metadata": {"desired": {"interval": {"timestamp": 1764990000}}, "reported": {"interval": {"timestamp": 1764990100}}},
    "version": 8
  },
  "timestamp": 1764990100,
  "clientToken": "coapgw"
}`

const awsShadow = `{
  "state": {
    "desired": {"interval": 60, "mode": "eco"},
    "reported": {"interval": 30, "mode": "eco"},
    "delta": {"interval": 60}
  },
  "metadata": {"desired": {"interval": {"timestamp": 1764990000}, "mode": {"timestamp": 1764990000}}},
  "version": 12,
  "timestamp": 1764990200
}`

func TestParseAWSDocuments(t *testing.T) {
	v, d, err := parseDelta([]byte(awsDelta))
	if msg, _ := render(d, v); err != nil || string(msg) != `{"state":{"fw":{"channel":"beta"},"interval":60},"version":7}` {
		t.Errorf("delta: %s %v", msg, err)
	}
	v, d, err = parseDocuments([]byte(awsDocuments))
	if msg, _ := render(d, v); err != nil || string(msg) != `{"state":{"fw":{"channel":"beta"}},"version":8}` {
		t.Errorf("documents: %s %v (interval 60.0 reported matches 60 desired)", msg, err)
	}
	v, d, err = parseShadow([]byte(awsShadow))
	if msg, _ := render(d, v); err != nil || string(msg) != `{"state":{"interval":60},"version":12}` {
		t.Errorf("GetThingShadow: %s %v", msg, err)
	}
	if v, err := parseVersion([]byte(`{"version":13,"timestamp":1764990300}`)); err != nil || v != 13 {
		t.Errorf("delete/accepted: %d %v", v, err)
	}
	for _, bad := range []string{``, `{`, `[]`, `{"state":{"a":1}}`, `{"version":1}{}`, `{"current":{"state":{}}}`} {
		if _, _, err := parseDelta([]byte(bad)); err == nil && bad != `{"current":{"state":{}}}` {
			t.Errorf("parseDelta(%q) took it", bad)
		}
		if _, _, err := parseDocuments([]byte(bad)); err == nil {
			t.Errorf("parseDocuments(%q) took it", bad)
		}
	}
}

func TestComputeDelta(t *testing.T) {
	for _, c := range []struct{ desired, reported, want string }{
		{`{"a":1}`, `{"a":1}`, ``},
		{`{"a":1}`, `{"a":1.0}`, ``},
		{`{"a":1}`, `{"a":2}`, `{"a":1}`},
		{`{"a":1}`, `{}`, `{"a":1}`},
		{`{"o":{"x":1,"y":2}}`, `{"o":{"x":1,"y":3}}`, `{"o":{"y":2}}`},
		{`{"o":{"x":1}}`, `{"o":5}`, `{"o":{"x":1}}`},
		{`{"o":{"x":1}}`, `{"o":{"x":1,"z":9}}`, ``},
		{`{"arr":[1,2]}`, `{"arr":[1,2]}`, ``},
		{`{"arr":[1,2]}`, `{"arr":[1,2,3]}`, `{"arr":[1,2]}`},
		{`{"s":"on"}`, `{"s":"off","t":1}`, `{"s":"on"}`},
		{`{}`, `{"t":1}`, ``},
	} {
		var des, rep map[string]any
		if err := decode([]byte(c.desired), &des); err != nil {
			t.Fatal(err)
		}
		if err := decode([]byte(c.reported), &rep); err != nil {
			t.Fatal(err)
		}
		_, got := render(computeDelta(des, rep), 1)
		if string(got) != c.want {
			t.Errorf("delta of %s against %s: %s, want %s", c.desired, c.reported, got, c.want)
		}
	}
}

func TestThingOf(t *testing.T) {
	for topic, want := range map[string]string{
		"$aws/things/dev-1/shadow/update/delta":                    "dev-1 update/delta",
		"$aws/things/dev-1/shadow/update/documents":                "dev-1 update/documents",
		"$aws/things/dev-1/shadow/name/coapgw/update/delta":        "",
		"$aws/things/dev-1/shadow/name/coapgw/update/documents":    "",
		"$aws/things//shadow/update/delta":                         "",
		"other/topic":                                              "",
		"$aws/things/dev-1/jobs/notify":                            "",
		"$aws/things/dev-1/shadow/delete/accepted":                 "dev-1 delete/accepted",
		"$aws/things/a/shadow/name/x/shadow/update/delta/../../..": "",
	} {
		thing, op, ok := thingOf(topic)
		got := ""
		if ok {
			got = thing + " " + op
		}
		if got != want {
			t.Errorf("thingOf(%q) = %q, want %q", topic, got, want)
		}
	}
}
