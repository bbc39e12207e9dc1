package registry

import (
	"encoding/json"
	"errors"
	"time"
)

// The read API below is fixed: internal/httpapi codes against it. Times are UTC.

// ErrNotFound is returned for a thing that does not exist.
var ErrNotFound = errors.New("not found")

// ThingType is one thing type and how many things it has.
type ThingType struct {
	Name      string    `json:"thingTypeName"`
	Things    int64     `json:"things"`
	CreatedAt time.Time `json:"createdAt"`
}

// Thing is one device.
type Thing struct {
	Name      string    `json:"thingName"`
	Type      string    `json:"thingTypeName"`
	FirstSeen time.Time `json:"firstSeen"`
	LastSeen  time.Time `json:"lastSeen"`
	Messages  int64     `json:"messages"`
	Version   int64     `json:"version"` // the shadow's version
	// Latest are the thing's most recently reported values (ThingQuery.Latest of them), by
	// property; only in a ThingPage, and only when asked for.
	Latest []Value `json:"latest,omitempty"`
}

// Value is one reported value of a thing: a scalar leaf of its shadow's state.reported.
type Value struct {
	Property string          `json:"property"` // the JSON path joined with "."
	Value    json.RawMessage `json:"value"`    // a JSON number, string or boolean
	Unit     string          `json:"unit,omitempty"`
	T        time.Time       `json:"t"` // when it was reported (received_at, or a SenML reading's time)
}

// ThingQuery selects a page of things, by default newest LastSeen first.
type ThingQuery struct {
	Type   string // "" = all types
	Prefix string // thing name prefix filter, "" = none
	Limit  int    // 1–1000; 0 means 100
	Cursor string // opaque, from ThingPage.Next of the same Sort and Order
	// Sort is the order of the list, one of ThingSorts; "" = SortLastSeen.
	Sort string
	// Order is OrderAsc or OrderDesc; "" = the sort's default (DefaultOrder).
	Order string
	// Latest is how many of each thing's most recently reported values to give (Thing.Latest),
	// 0 = none, at most MaxLatest.
	Latest int
}

// Sorts of the things list (ThingQuery.Sort). Every one is a keyset walk on an index, so every
// page costs the same however deep.
const (
	SortLastSeen  = "lastSeen"  // last_seen to the second, then newest created
	SortFirstSeen = "firstSeen" // first_seen, then id
	SortMessages  = "messages"  // records applied (within its last second, 16 records or 6%: list.go), then id
	SortName      = "name"
	SortType      = "type" // type name, then thing name
)

// ThingSorts are the values of ThingQuery.Sort.
var ThingSorts = []string{SortLastSeen, SortFirstSeen, SortMessages, SortName, SortType}

// Orders of the things list (ThingQuery.Order).
const (
	OrderAsc  = "asc"
	OrderDesc = "desc"
)

// DefaultOrder is the order of a sort when none is given: ascending by name and type, newest
// and most first otherwise.
func DefaultOrder(sort string) string {
	if sort == SortName || sort == SortType {
		return OrderAsc
	}
	return OrderDesc
}

// MaxLatest bounds ThingQuery.Latest.
const MaxLatest = 20

// ThingPage is one page of things.
type ThingPage struct {
	Things []Thing `json:"things"`
	Next   string  `json:"nextToken,omitempty"` // "" on the last page
	Total  int64   `json:"total"`               // things matching Type/Prefix
}

// Point is one numeric sample of a property.
type Point struct {
	T time.Time `json:"t"`
	V float64   `json:"v"`
}

// Series is the history of one numeric property; Property is the JSON path joined with "."
// ("temp", "env.hum").
type Series struct {
	Property string  `json:"property"`
	Unit     string  `json:"unit,omitempty"` // SenML's unit of the property's readings, if any
	Points   []Point `json:"points"`
}

// HistoryQuery selects history of one thing.
type HistoryQuery struct {
	Property string    // "" = every numeric property
	Since    time.Time // zero = everything retained
	Limit    int       // points per series, newest kept; 0 means 1000
}

// SetAside is a record that failed permanently and was set aside with its reason.
type SetAside struct {
	GW         string          `json:"gw"`
	Seq        uint64          `json:"seq"`
	ReceivedAt time.Time       `json:"receivedAt"`
	Type       string          `json:"thingTypeName"`
	Thing      string          `json:"thingName"`
	Reason     string          `json:"reason"`
	Payload    json.RawMessage `json:"payload,omitempty"`       // when it is valid JSON
	PayloadB64 []byte          `json:"payloadBase64,omitempty"` // otherwise
	At         time.Time       `json:"setAsideAt"`
}

// SetAsidePage is one page of set-aside records, newest first.
type SetAsidePage struct {
	Records []SetAside `json:"records"`
	Next    string     `json:"nextToken,omitempty"`
	Total   int64      `json:"total"`
}

// Counts summarises the registry for the dashboard's status panel.
type Counts struct {
	ThingTypes int64 `json:"thingTypes"`
	Things     int64 `json:"things"`
	Messages   int64 `json:"messages"` // records applied
	SetAside   int64 `json:"setAside"` // set-aside records held (at most MaxSetAside)
	// SetAsideDropped counts the oldest set-aside records deleted to stay within MaxSetAside.
	SetAsideDropped int64 `json:"setAsideDropped"`
}

// Reader is the registry's read API (implemented by *Registry).
//
//	ThingTypes(ctx) ([]ThingType, error)
//	Things(ctx, ThingQuery) (ThingPage, error)
//	Thing(ctx, name) (Thing, error)                 // ErrNotFound
//	Shadow(ctx, name) ([]byte, error)               // AWS GetThingShadow document; ErrNotFound
//	History(ctx, name, HistoryQuery) ([]Series, error)
//	SetAsides(ctx, limit int, cursor string) (SetAsidePage, error)
//	Counts(ctx) (Counts, error)
