// Package awsiot is the processor's sink for AWS IoT Core: it makes sure each record's thing type
// and thing exist in the registry and merges the record's properties into the thing's classic
// shadow (state.reported), one UpdateThingShadow per thing per batch; optionally it publishes
// every record to an MQTT topic. It implements processor.Sink; docs/aws-processing.md has the
// design and its trade-offs.
//
// Registry. On the first sight of a thing (a miss in a bounded LRU cache) the sink reads its
// shadow (GetThingShadow). A shadow coapgw wrote names the thing's type in coapgw's own key, so a
// thing that any coapgw worker has seen before costs no control-plane call at all, after a
// restart or in a fresh Lambda environment too. Otherwise the sink calls CreateThingType (once
// per type, also cached) and CreateThing with the type; ResourceAlreadyExistsException counts as
// success for a type, and for a thing it means "exists with another configuration": then
// DescribeThing says which type it has. A thing that exists with another type (or none) is a
// permanent error: its records are set aside with the reason "thing X exists with type Y".
//
// Shadow, order and redelivery. The sink keeps, next to the properties, a reserved reported key
// "_coapgw" = {"v":1,"type":T,"t":stamps} where stamps encode every leaf's received_at in
// nanoseconds (and deletions), so that the processor's per-leaf last-writer-wins rule (see
// processor.Doc) holds in AWS: each update is a read-modify-write of the cached document, sent as
// a JSON merge patch of what changed, conditional on the shadow version the cache holds
// (optimistic concurrency: a ConflictException makes the sink re-read the shadow and merge
// again). A redelivered record or one older than what the shadow shows changes nothing and
// costs no call (Outcome Duplicate). Records whose property "_coapgw" would clash with the
// reserved key are set aside, and the reserved key counts toward the 8 KB limit.
//
// Errors. Throttling is retried by the SDK's adaptive retryer; what remains is transient
// (throttling, 5xx, network, credentials, access denied: Apply returns an error and the processor
// retries the batch) or permanent per thing (InvalidRequestException, RequestEntityTooLarge,
// unsupported encoding, a thing/type conflict, a shadow over the limits: those records are set
// aside with the reason).
//
// The IoT data plane is called through a small built-in client (see dataplane.go) that uses the
// SDK's middleware stack, retryer, signer and the config's credentials; its endpoint is
// Config.DataEndpoint, else aws.Config.BaseEndpoint, else the account's iot:Data-ATS endpoint
// from DescribeEndpoint (one call, the first time it is needed).
//
// IAM: iot:CreateThingType, iot:CreateThing, iot:DescribeThing, iot:DescribeEndpoint (unless
// DataEndpoint is set), iot:GetThingShadow, iot:UpdateThingShadow, iot:Publish (if publishing).
//
// Metrics (registered on the Registerer given to New):
//
//	coapgw_awsiot_calls_total{operation,result="ok|error"}   AWS API calls (retries not counted)
//	coapgw_awsiot_thing_cache_total{result="hit|miss"}       thing cache lookups
//	coapgw_awsiot_shadow_conflicts_total                     version conflicts (shadow re-read)
//	coapgw_awsiot_shadow_unchanged_total                     updates skipped: already reflected
//	coapgw_awsiot_set_aside_total{reason}                    records set aside by the sink:
//	                                                         type_conflict, shadow_limit,
//	                                                         reserved_key, rejected
//
// Configuration (Config; env COAPGW_* in cmd/coapgw process and cmd/coapgw-lambda):
// PublishTopic (publish_topic, default "" = off; {type} and {thing} are replaced), DataEndpoint
// (iot_data_endpoint), ThingCacheSize (thing_cache_size, default 100000), TypeCacheSize
// (default 10000), Concurrency (iot_concurrency, things updated at once, default 32),
// MaxAttempts (SDK attempts per call, default 5).
package awsiot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/coapgw/coapgw/internal/jsonscan"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/processor"
)

// ReservedKey is the reported-state key where coapgw keeps its own data (the thing type and the
// per-leaf times). Devices may not report a property of that name.
const ReservedKey = "_coapgw"

// iotAPI is the part of the IoT control-plane client the sink uses.
type iotAPI interface {
	CreateThingType(ctx context.Context, in *iot.CreateThingTypeInput, optFns ...func(*iot.Options)) (*iot.CreateThingTypeOutput, error)
	CreateThing(ctx context.Context, in *iot.CreateThingInput, optFns ...func(*iot.Options)) (*iot.CreateThingOutput, error)
	DescribeThing(ctx context.Context, in *iot.DescribeThingInput, optFns ...func(*iot.Options)) (*iot.DescribeThingOutput, error)
	DescribeEndpoint(ctx context.Context, in *iot.DescribeEndpointInput, optFns ...func(*iot.Options)) (*iot.DescribeEndpointOutput, error)
}

// iotDataAPI is the part of the IoT data-plane client the sink uses.
type iotDataAPI interface {
	UpdateThingShadow(ctx context.Context, in *UpdateThingShadowInput) (*UpdateThingShadowOutput, error)
	GetThingShadow(ctx context.Context, in *GetThingShadowInput) (*GetThingShadowOutput, error)
	Publish(ctx context.Context, in *PublishInput) (*PublishOutput, error)
}

var (
	_ iotAPI         = (*iot.Client)(nil)
	_ iotDataAPI     = (*dataClient)(nil)
	_ processor.Sink = (*Sink)(nil)
)

// Config configures a Sink. The zero value gives the defaults.
type Config struct {
	// PublishTopic, if set, is the MQTT topic every record is published to (the envelope JSON,
	// at least once); "{type}" and "{thing}" in it are replaced by the record's. A Basic Ingest
	// topic ($aws/rules/<rule>) sends the records to a rule without a broker.
	PublishTopic string
	// DataEndpoint is the IoT data endpoint (host or URL) of the account, as DescribeEndpoint
	// with iot:Data-ATS reports it. Empty: aws.Config.BaseEndpoint if set, else DescribeEndpoint.
	DataEndpoint string
	// ThingCacheSize bounds the things remembered (type, shadow version and state); default
	// 100000.
	ThingCacheSize int
	// TypeCacheSize bounds the thing types remembered as existing; default 10000.
	TypeCacheSize int
	// Concurrency is the number of things updated at once within a batch; default 32.
	Concurrency int
	// MaxAttempts is the SDK's attempts per call (adaptive retry mode); default 5.
	MaxAttempts int
	// ConflictRetries bounds the re-reads after version conflicts in one Apply; default 5.
	ConflictRetries int
}

func (c *Config) setDefaults() {
	if c.ThingCacheSize == 0 {
		c.ThingCacheSize = 100_000
	}
	if c.TypeCacheSize == 0 {
		c.TypeCacheSize = 10_000
	}
	if c.Concurrency == 0 {
		c.Concurrency = 32
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.ConflictRetries == 0 {
		c.ConflictRetries = 5
	}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.ThingCacheSize < 0 || c.TypeCacheSize < 0 {
		errs = append(errs, errors.New("awsiot: cache sizes must not be negative"))
	}
	if c.Concurrency < 0 || c.Concurrency > 1024 {
		errs = append(errs, fmt.Errorf("awsiot: concurrency %d: want 1–1024", c.Concurrency))
	}
	if c.MaxAttempts < 0 || c.ConflictRetries < 0 {
		errs = append(errs, errors.New("awsiot: attempts must not be negative"))
	}
	if t := c.PublishTopic; t != "" {
		if strings.ContainsAny(t, "+#") || strings.HasPrefix(t, "/") || len(t) > 256 {
			errs = append(errs, fmt.Errorf("awsiot: publish topic %q: no wildcards, no leading '/', at most 256 bytes", t))
		}
	}
	return errors.Join(errs...)
}

// Sink applies processor batches to AWS IoT. Apply may be called from several goroutines, but
// the processor calls it from one.
type Sink struct {
	cfg  Config
	iot  iotAPI
	data iotDataAPI
	log  *slog.Logger
	m    *metrics

	things *lru[string, *thingState]
	types  *lru[string, struct{}]

	flightMu sync.Mutex
	flights  map[string]*flight // thing types being created

	pubMu    sync.Mutex
	pubBatch *processor.Batch // the batch published records belong to (retries reuse the batch)
	pubDone  []bool

	// thingLocks serialise the updates of one thing across concurrent Apply calls (the worker's
	// pollers): two of them writing the same shadow against the same version would make one get
	// ConflictException and re-read it. Striped by a hash of the name; a goroutine holds one at a
	// time.
	thingLocks [256]sync.Mutex
	lockSeed   maphash.Seed

	now func() time.Time
}

func (s *Sink) thingLock(name string) *sync.Mutex {
	return &s.thingLocks[maphash.String(s.lockSeed, name)%uint64(len(s.thingLocks))]
}

// thingState is what the sink knows of a thing; immutable once cached.
type thingState struct {
	typ     string         // its thing type ("" = none, or unknown for a shadow without stamps)
	version int64          // its shadow's version; 0 = no shadow
	doc     *processor.Doc // its reported state with coapgw's per-leaf times
}

type flight struct {
	done chan struct{}
	err  error
}

// New returns a sink using clients made from awsCfg (credentials from the SDK default chain in
// production). It validates cfg and does no I/O.
func New(cfg Config, awsCfg aws.Config, log *slog.Logger, reg prometheus.Registerer) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	retryer := func() aws.Retryer {
		return retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
			o.StandardOptions = append(o.StandardOptions, func(so *retry.StandardOptions) { so.MaxAttempts = cfg.MaxAttempts })
		})
	}
	iotClient := iot.NewFromConfig(awsCfg, func(o *iot.Options) { o.Retryer = retryer() })
	s, err := newSink(cfg, iotClient, nil, log, reg)
	if err != nil {
		return nil, err
	}
	endpoint := cfg.DataEndpoint
	if endpoint == "" && awsCfg.BaseEndpoint != nil {
		endpoint = *awsCfg.BaseEndpoint
	}
	s.data = newDataClient(awsCfg, s.endpointResolver(endpoint), retryer())
	return s, nil
}

func newSink(cfg Config, iotc iotAPI, data iotDataAPI, log *slog.Logger, reg prometheus.Registerer) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("awsiot metrics: %w", err)
	}
	return &Sink{
		cfg: cfg, iot: iotc, data: data, log: log, m: m,
		things:   newLRU[string, *thingState](cfg.ThingCacheSize),
		types:    newLRU[string, struct{}](cfg.TypeCacheSize),
		flights:  make(map[string]*flight),
		lockSeed: maphash.MakeSeed(),
		now:      time.Now,
	}, nil
}

// endpointResolver returns the data endpoint: fixed, or looked up once with DescribeEndpoint.
func (s *Sink) endpointResolver(fixed string) func(ctx context.Context) (string, error) {
	if fixed != "" {
		if !strings.Contains(fixed, "://") {
			fixed = "https://" + fixed
		}
		return func(context.Context) (string, error) { return fixed, nil }
	}
	var (
		mu       sync.Mutex
		resolved string
	)
	return func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if resolved != "" {
			return resolved, nil
		}
		out, err := s.iot.DescribeEndpoint(ctx, &iot.DescribeEndpointInput{EndpointType: aws.String("iot:Data-ATS")})
		s.m.call("DescribeEndpoint", err)
		if err != nil {
			return "", fmt.Errorf("describe iot:Data-ATS endpoint: %w", err)
		}
		resolved = "https://" + aws.ToString(out.EndpointAddress)
		return resolved, nil
	}
}

// Shadow reads a thing's classic shadow (one GetThingShadow, not cached) and returns its
// reported state as compact JSON without coapgw's key, and its version; "" and 0 if the thing
// has no shadow.
func (s *Sink) Shadow(ctx context.Context, thing string) (string, int64, error) {
	th, err := s.loadShadow(ctx, thing)
	if err != nil {
		return "", 0, err
	}
	if th.version == 0 {
		return "", 0, nil
	}
	return string(th.doc.AppendState(nil)), th.version, nil
}

// CachedThings is the number of things in the cache.
func (s *Sink) CachedThings() int { return s.things.Len() }

// Apply implements processor.Sink. Things are updated concurrently (Config.Concurrency); any
// transient failure fails the call after the others finished, and what succeeded is remembered,
// so the retry of the batch only redoes what failed.
func (s *Sink) Apply(ctx context.Context, b *processor.Batch) ([]processor.Outcome, error) {
	out := make([]processor.Outcome, len(b.Items))
	for i := range b.Items {
		if err := b.Items[i].Err; err != nil {
			out[i] = processor.Outcome{Result: processor.SetAside, Reason: err.Error()}
		}
	}
	pub := s.publishState(b)
	// The processor groups by (type, thing); one thing's updates run in order in one goroutine.
	var (
		order  []string
		groups = make(map[string][]int, len(b.Updates))
	)
	for i := range b.Updates {
		name := b.Updates[i].Thing
		if _, ok := groups[name]; !ok {
			order = append(order, name)
		}
		groups[name] = append(groups[name], i)
	}
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, s.cfg.Concurrency)
	)
	run := func(name string) {
		l := s.thingLock(name)
		l.Lock()
		defer l.Unlock()
		for _, ui := range groups[name] {
			if err := s.update(ctx, b, &b.Updates[ui], out, pub); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				return
			}
		}
	}
	if len(order) == 1 {
		run(order[0])
	} else {
		for _, name := range order {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				run(name)
			}()
		}
		wg.Wait()
	}
	if first == nil {
		first = ctx.Err()
	}
	if first != nil {
		return nil, first
	}
	s.publishDone(b)
	return out, nil
}

func setAside(reason string) processor.Outcome {
	return processor.Outcome{Result: processor.SetAside, Reason: reason}
}

// update applies one thing's coalesced records. It returns only transient errors; permanent
// ones set the records aside.
func (s *Sink) update(ctx context.Context, b *processor.Batch, u *processor.Update, out []processor.Outcome, pub *publishState) error {
	live := append([]int(nil), u.Items...)
	if reserved(u.Doc) {
		live = live[:0]
		for _, i := range u.Items {
			if reserved(b.Items[i].Doc) {
				out[i] = setAside(fmt.Sprintf("property %q is reserved for coapgw", ReservedKey))
				s.m.setAside.WithLabelValues("reserved_key").Inc()
				continue
			}
			live = append(live, i)
		}
		if len(live) == 0 {
			return nil
		}
	}
	th, err := s.thing(ctx, u.Type, u.Thing)
	if err != nil {
		var pe *permanentError
		if !errors.As(err, &pe) {
			return err
		}
		for _, i := range live {
			out[i] = setAside(pe.reason)
		}
		s.m.setAside.WithLabelValues(pe.label).Add(float64(len(live)))
		return nil
	}
	for attempt := 0; ; attempt++ {
		done, err := s.write(ctx, b, u, th, live, out, pub)
		if done || err != nil {
			return err
		}
		// A version conflict: someone else wrote the shadow. Read it and merge again.
		s.m.conflicts.Inc()
		if attempt >= s.cfg.ConflictRetries {
			return fmt.Errorf("update shadow of %s: version conflict persists after %d re-reads", u.Thing, attempt)
		}
		fresh, err := s.loadShadow(ctx, u.Thing)
		if err != nil {
			return err
		}
		fresh.typ = th.typ
		th = fresh
		s.things.Add(u.Thing, th)
	}
}

// write merges the live records into th's document and sends the change; done is false after a
// version conflict.
func (s *Sink) write(ctx context.Context, b *processor.Batch, u *processor.Update, th *thingState, live []int, out []processor.Outcome, pub *publishState) (done bool, err error) {
	patch := u.Doc
	if len(live) != len(u.Items) {
		patch = b.Coalesce(append([]int(nil), live...))
	}
	next := th.doc.Clone()
	if !next.Merge(patch) {
		for _, i := range live {
			out[i] = processor.Outcome{Result: processor.Duplicate}
		}
		s.m.unchanged.Inc()
		return true, s.publish(ctx, b, live, pub)
	}
	if reason := s.limits(next, th.typ); reason != "" {
		// Find the records that do not fit, one by one, from the state before this batch.
		cur, changed := th.doc, false
		keep := make([]int, 0, len(live))
		for _, i := range live {
			c := cur.Clone()
			if !c.Merge(b.Items[i].Doc) {
				keep = append(keep, i)
				continue
			}
			if reason := s.limits(c, th.typ); reason != "" {
				out[i] = setAside(reason)
				s.m.setAside.WithLabelValues("shadow_limit").Inc()
				continue
			}
			cur, changed = c, true
			keep = append(keep, i)
		}
		live, next = keep, cur
		if !changed {
			for _, i := range live {
				out[i] = processor.Outcome{Result: processor.Duplicate}
			}
			return true, s.publish(ctx, b, live, pub)
		}
	}
	if err := s.publish(ctx, b, live, pub); err != nil {
		return false, err
	}
	body := s.updateBody(th, next)
	resp, err := s.data.UpdateThingShadow(ctx, &UpdateThingShadowInput{ThingName: u.Thing, Payload: body})
	s.m.call("UpdateThingShadow", err)
	if err != nil {
		if hasCode(err, "ConflictException") {
			return false, nil
		}
		err = classify(err)
		var pe *permanentError
		if errors.As(err, &pe) {
			reason := "AWS IoT rejected the shadow update: " + pe.reason
			for _, i := range live {
				out[i] = setAside(reason)
			}
			s.m.setAside.WithLabelValues("rejected").Add(float64(len(live)))
			return true, nil
		}
		return false, fmt.Errorf("update shadow of %s: %w", u.Thing, err)
	}
	var doc struct{ Version int64 }
	if err := json.Unmarshal(resp.Payload, &doc); err != nil || doc.Version == 0 {
		// The update is in; without its version the next one must re-read the shadow.
		s.things.Remove(u.Thing)
		s.log.Warn("shadow update response without a version", "thing", u.Thing, "err", err)
	} else {
		s.things.Add(u.Thing, &thingState{typ: th.typ, version: doc.Version, doc: next})
	}
	// Each record: applied if it changed the state before this batch, else a duplicate.
	for _, i := range live {
		if out[i].Result != 0 {
			continue
		}
		if len(live) > 1 && !th.doc.Clone().Merge(b.Items[i].Doc) {
			out[i] = processor.Outcome{Result: processor.Duplicate}
			continue
		}
		out[i] = processor.Outcome{Result: processor.Applied}
	}
	return true, nil
}

// meta is the value of the reserved key.
type meta struct {
	V      int    `json:"v"`
	Type   string `json:"type"`
	Stamps string `json:"t"`
}

// metaJSON is the value of the reserved key for a thing of type typ whose state is d.
func metaJSON(typ string, d *processor.Doc) []byte {
	b := fmt.Appendf(nil, `{"v":%d,"type":`, stampsVersion)
	b = jsonscan.AppendQuoted(b, typ)
	b = append(b, `,"t":"`...)
	b = append(b, encodeStamps(d)...)
	return append(b, `"}`...)
}

// updateBody is the UpdateThingShadow document turning th's state into next: the merge patch,
// the reserved key, and th's version when the shadow exists.
func (s *Sink) updateBody(th *thingState, next *processor.Doc) []byte {
	b := make([]byte, 0, 256+next.Size())
	b = append(b, `{"state":{"reported":{`...)
	b, wrote := appendPatch(b, th.doc, next, true)
	if wrote {
		b = append(b, ',')
	}
	b = jsonscan.AppendQuoted(b, ReservedKey)
	b = append(b, ':')
	b = append(b, metaJSON(th.typ, next)...)
	b = append(b, "}}"...)
	if th.version > 0 {
		b = append(b, `,"version":`...)
		b = fmt.Appendf(b, "%d", th.version)
	}
	return append(b, '}')
}

// limits checks a thing's state against the shadow limits, the reserved key included (AWS
// counts the whole reported object toward its size limit).
func (s *Sink) limits(d *processor.Doc, typ string) string {
	if reason := d.CheckLimits(); reason != "" {
		return reason
	}
	size := d.Size() + len(ReservedKey) + 3 + len(metaJSON(typ, d)) // "key":meta
	if !d.Empty() {
		size++ // the comma
	}
	if size > processor.MaxShadowBytes {
		return fmt.Sprintf("shadow would be %d bytes with coapgw's per-property times, over the %d-byte limit", size, processor.MaxShadowBytes)
	}
	return ""
}

// reserved reports whether a document writes the reserved key.
func reserved(d *processor.Doc) bool {
	if d == nil {
		return false
	}
	_, ok := d.Root().Find(ReservedKey)
	return ok
}

// thing returns what the sink knows of a thing, making sure it exists with type typ: from the
// cache, else from its shadow, else by creating it. A *permanentError says it cannot be used.
func (s *Sink) thing(ctx context.Context, typ, name string) (*thingState, error) {
	if th, ok := s.things.Get(name); ok {
		s.m.cacheHit.Inc()
		if th.typ != typ {
			return nil, conflict(name, th.typ)
		}
		return th, nil
	}
	s.m.cacheMiss.Inc()
	th, err := s.loadShadow(ctx, name)
	if err != nil {
		return nil, err
	}
	if th.typ != "" && th.typ != typ {
		// coapgw created it with another type: the registry has the last word.
		actual, exists, err := s.describe(ctx, name)
		if err != nil {
			return nil, err
		}
		if exists {
			th.typ = actual
			s.things.Add(name, th)
			if actual != typ {
				return nil, conflict(name, actual)
			}
			return th, nil
		}
	}
	if th.typ != typ {
		if err := s.ensureType(ctx, typ); err != nil {
			return nil, err
		}
		actual, err := s.createThing(ctx, name, typ)
		if err != nil {
			return nil, err
		}
		th.typ = actual
	}
	s.things.Add(name, th)
	if th.typ != typ {
		return nil, conflict(name, th.typ)
	}
	return th, nil
}

func conflict(name, typ string) *permanentError {
	if typ == "" {
		return &permanentError{reason: fmt.Sprintf("thing %s exists without a thing type", name), label: "type_conflict"}
	}
	return &permanentError{reason: fmt.Sprintf("thing %s exists with type %s", name, typ), label: "type_conflict"}
}

// loadShadow reads a thing's shadow into a thingState (type from coapgw's key, if any).
func (s *Sink) loadShadow(ctx context.Context, name string) (*thingState, error) {
	out, err := s.data.GetThingShadow(ctx, &GetThingShadowInput{ThingName: name})
	if err != nil && hasCode(err, "ResourceNotFoundException") {
		s.m.call("GetThingShadow", nil)
		return &thingState{doc: processor.NewDoc()}, nil
	}
	s.m.call("GetThingShadow", err)
	if err != nil {
		return nil, fmt.Errorf("get shadow of %s: %w", name, classify(err))
	}
	th, err := s.parseShadow(out.Payload)
	if err != nil {
		return nil, fmt.Errorf("shadow of %s: %w", name, err)
	}
	return th, nil
}

func (s *Sink) parseShadow(payload []byte) (*thingState, error) {
	var doc struct {
		State struct {
			Reported map[string]json.RawMessage `json:"reported"`
		} `json:"state"`
		Version   int64 `json:"version"`
		Timestamp int64 `json:"timestamp"`
	}
	if err := json.Unmarshal(payload, &doc); err != nil {
		return nil, err
	}
	th := &thingState{version: doc.Version}
	var stamps *processor.Doc
	if raw, ok := doc.State.Reported[ReservedKey]; ok {
		delete(doc.State.Reported, ReservedKey)
		var m meta
		if err := json.Unmarshal(raw, &m); err == nil && m.V == stampsVersion {
			th.typ = m.Type
			if stamps, err = decodeStamps(m.Stamps); err != nil {
				s.log.Warn("shadow stamps unreadable; treating its properties as written at its last update", "err", err)
				stamps = nil
			}
		}
	}
	fallback := doc.Timestamp * 1e9
	if fallback == 0 {
		fallback = s.now().UnixNano()
	}
	d, err := rebuild(stamps, doc.State.Reported, fallback)
	if err != nil {
		return nil, err
	}
	th.doc = d
	return th, nil
}

// ensureType creates a thing type unless it is known to exist; concurrent callers for the same
// type share one call.
func (s *Sink) ensureType(ctx context.Context, typ string) error {
	if _, ok := s.types.Get(typ); ok {
		return nil
	}
	s.flightMu.Lock()
	if _, ok := s.types.Get(typ); ok {
		s.flightMu.Unlock()
		return nil
	}
	if f := s.flights[typ]; f != nil {
		s.flightMu.Unlock()
		select {
		case <-f.done:
			return f.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	s.flights[typ] = f
	s.flightMu.Unlock()

	_, err := s.iot.CreateThingType(ctx, &iot.CreateThingTypeInput{ThingTypeName: aws.String(typ)})
	s.m.call("CreateThingType", err)
	switch {
	case err == nil, hasCode(err, "ResourceAlreadyExistsException"):
		s.types.Add(typ, struct{}{})
	default:
		f.err = fmt.Errorf("create thing type %s: %w", typ, classify(err))
		var pe *permanentError
		if errors.As(f.err, &pe) {
			f.err = &permanentError{reason: "create thing type " + typ + ": " + pe.reason, label: "rejected"}
		}
	}
	s.flightMu.Lock()
	delete(s.flights, typ)
	s.flightMu.Unlock()
	close(f.done)
	return f.err
}

// createThing creates a thing of type typ and returns the type the thing has: typ, or the type
// of a thing that already existed with another configuration.
func (s *Sink) createThing(ctx context.Context, name, typ string) (string, error) {
	for attempt := 0; ; attempt++ {
		_, err := s.iot.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(name), ThingTypeName: aws.String(typ)})
		s.m.call("CreateThing", err)
		switch {
		case err == nil:
			return typ, nil
		case hasCode(err, "ResourceAlreadyExistsException"):
			actual, exists, err := s.describe(ctx, name)
			if err != nil {
				return "", err
			}
			if exists || attempt > 0 {
				return actual, nil
			}
		case hasCode(err, "ResourceNotFoundException") && attempt == 0:
			// The thing type was deleted since it was cached.
			s.types.Remove(typ)
			if err := s.ensureType(ctx, typ); err != nil {
				return "", err
			}
		default:
			err = classify(err)
			var pe *permanentError
			if errors.As(err, &pe) {
				return "", &permanentError{reason: "create thing " + name + ": " + pe.reason, label: "rejected"}
			}
			return "", fmt.Errorf("create thing %s: %w", name, err)
		}
	}
}

// describe returns a thing's type ("" for none) and whether the thing exists.
func (s *Sink) describe(ctx context.Context, name string) (typ string, exists bool, err error) {
	out, err := s.iot.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String(name)})
	if err != nil && hasCode(err, "ResourceNotFoundException") {
		s.m.call("DescribeThing", nil)
		return "", false, nil
	}
	s.m.call("DescribeThing", err)
	if err != nil {
		return "", false, fmt.Errorf("describe thing %s: %w", name, classify(err))
	}
	return aws.ToString(out.ThingTypeName), true, nil
}

// publishState remembers which records of a batch were published, so that the processor's
// retry of the same batch after a transient failure does not publish them again.
type publishState struct {
	mu   *sync.Mutex
	done []bool
}

func (s *Sink) publishState(b *processor.Batch) *publishState {
	if s.cfg.PublishTopic == "" {
		return nil
	}
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if s.pubBatch != b {
		s.pubBatch, s.pubDone = b, make([]bool, len(b.Items))
	}
	return &publishState{mu: &s.pubMu, done: s.pubDone}
}

func (s *Sink) publishDone(b *processor.Batch) {
	if s.cfg.PublishTopic == "" {
		return
	}
	s.pubMu.Lock()
	if s.pubBatch == b {
		s.pubBatch, s.pubDone = nil, nil
	}
	s.pubMu.Unlock()
}

// publish sends the records live (not yet published in this batch) to the publish topic.
func (s *Sink) publish(ctx context.Context, b *processor.Batch, live []int, pub *publishState) error {
	if pub == nil {
		return nil
	}
	for _, i := range live {
		pub.mu.Lock()
		done := pub.done[i]
		pub.mu.Unlock()
		if done {
			continue
		}
		rec := &b.Items[i].Record
		body, err := envelope.Encode(*rec)
		if err != nil {
			return fmt.Errorf("publish record %s/%d: %w", rec.GW, rec.Seq, err)
		}
		topic := strings.NewReplacer("{type}", rec.Type, "{thing}", rec.ID).Replace(s.cfg.PublishTopic)
		_, err = s.data.Publish(ctx, &PublishInput{Topic: topic, Payload: []byte(body), Qos: 1})
		s.m.call("Publish", err)
		if err != nil {
			// Even a rejected publish is transient: the topic or its policy is configuration
			// an operator fixes, not a reason to drop telemetry.
			return fmt.Errorf("publish to %s: %w", topic, err)
		}
		pub.mu.Lock()
		pub.done[i] = true
		pub.mu.Unlock()
	}
	return nil
}

// permanentError is a failure that retrying cannot fix; its records are set aside.
type permanentError struct {
	reason string
	label  string // the set_aside metric's reason label
	err    error
}

func (e *permanentError) Error() string { return e.reason }
func (e *permanentError) Unwrap() error { return e.err }

// permanentCodes are the AWS error codes that retrying the same request cannot fix.
var permanentCodes = map[string]bool{
	"InvalidRequestException":              true,
	"RequestEntityTooLargeException":       true,
	"UnsupportedDocumentEncodingException": true,
	"MethodNotAllowedException":            true,
	"ValidationException":                  true,
	"SerializationException":               true,
	"VersionConflictException":             true,
}

// classify returns err as a *permanentError if retrying cannot help, else unchanged (transient:
// throttling the SDK gave up on, 5xx, network, credentials, access denied, anything unknown).
func classify(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var api smithy.APIError
	if errors.As(err, &api) && permanentCodes[api.ErrorCode()] {
		reason := api.ErrorCode()
		if msg := api.ErrorMessage(); msg != "" {
			reason += ": " + msg
		}
		return &permanentError{reason: reason, label: "rejected", err: err}
	}
	return err
}

func hasCode(err error, code string) bool {
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == code
}
