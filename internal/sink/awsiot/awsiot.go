// Package awsiot is the processor's sink for AWS IoT Core: it makes sure each record's thing type
// and thing exist in the registry and merges the record's properties into the thing's classic
// shadow (state.reported), one UpdateThingShadow per thing per batch; optionally it publishes
// every record to an MQTT topic. It implements processor.Sink; docs/aws-processing.md has the
// design and its trade-offs.
//
// Registry. On the first sight of a thing (a miss in a bounded LRU cache) the sink reads its
// shadows (GetThingShadow). coapgw's named shadow RegistryShadow ("coapgw") names the thing's
// type, so a thing that any coapgw worker has seen before costs no control-plane call at all,
// after a restart or in a fresh Lambda environment too. Otherwise the sink calls CreateThingType (once
// per type, also cached) and CreateThing with the type; ResourceAlreadyExistsException counts as
// success for a type, and for a thing it means "exists with another configuration": then
// DescribeThing says which type it has. A thing that exists with another type (or none) is a
// permanent error: its records are set aside with the reason "thing X exists with type Y".
//
// Shadow, order and redelivery (versioned mode, the default). state.reported holds only the
// devices' properties. The sink keeps, in the named shadow RegistryShadow,
// {"v":1,"type":T,"t":stamps,"sv":V} where stamps encode every leaf's received_at in nanoseconds
// (and deletions) for version V of the classic shadow, so that the processor's per-leaf
// last-writer-wins rule (see processor.Doc) holds in AWS: each update is a read-modify-write of
// the cached document, sent as a JSON merge patch of what changed, conditional on the shadow
// version the cache holds (optimistic concurrency: a ConflictException makes the sink re-read
// both shadows and merge again), followed by the stamps' update, conditional on the named
// shadow's version. A reader whose stamps are for another version counts each property as
// written at the later of stamp and metadata time. A redelivered record or one older than what
// the shadow shows changes nothing and costs no call (Outcome Duplicate). A shadow of an earlier
// version with coapgw's key ReservedKey ("_coapgw") in state.reported is read and the key removed
// by the next update; device properties of that name are set aside.
//
// Ordered mode (Config.Ordered, for a FIFO queue with one message group per thing; see
// ordered.go): a thing's batches reach one consumer at a time in queue order, so each batch is
// one blind merge-patch UpdateThingShadow — no version, no read — and state.reported holds only
// the devices' properties. The thing type lives in the named shadow RegistryShadow ("coapgw"),
// read once per thing per consumer and written once per thing; "_coapgw" is an ordinary
// property. The trade-off (a record that enters the queue out of order can overwrite a newer
// value) is in docs/aws-processing.md.
//
// Existing things (Config.AdoptThings): a thing that exists with another type or none is used
// as it is, its type never changed.
//
// Memory: the thing cache is bounded by count (ThingCacheSize) and by estimated bytes
// (ThingCacheBytes, thingCost per thing).
//
// Control-plane budget (budget.go): CreateThing and CreateThingType are paced per consumer to
// CreateThingRate/CreateThingTypeRate over Consumers; a thing that cannot be created within
// BudgetWait has its records deferred (processor.Deferred).
//
// Errors. Throttling is retried by the SDK's adaptive retryer; what remains is deferred per thing
// (throttling, the batch's deadline), transient (5xx, network, credentials, access denied: Apply
// returns an error and the processor retries the batch) or permanent per thing (InvalidRequestException, RequestEntityTooLarge,
// unsupported encoding, a thing/type conflict, a shadow over the limits, a publish refused with a
// 4xx: those records are set aside with the reason).
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
//	                                                         reserved_key, rejected,
//	                                                         publish_rejected
//	coapgw_awsiot_deferred_total{reason}                     records deferred: budget,
//	                                                         throttled, deadline
//
// Configuration (Config; env COAPGW_* in cmd/coapgw process and cmd/coapgw-lambda):
// PublishTopic (publish_topic, default "" = off; {type} and {thing} are replaced), DataEndpoint
// (iot_data_endpoint), ThingCacheSize (thing_cache_size, default 100000), ThingCacheBytes
// (thing_cache_bytes, default 64 MiB; in Lambda a quarter of the function's memory), TypeCacheSize
// (default 10000), Concurrency (iot_concurrency, things updated at once, default 32),
// MaxAttempts (SDK attempts per call, default 5), Ordered (fifo_queue; `coapgw process` sets it
// for a .fifo queue URL), AdoptThings (adopt_things), SeedShadow (seed_shadow: thing type
// description and FirstSeen attribute as the 2018 processor wrote them; seedshadow.go),
// PublishPack (publish_pack), Consumers (iot_consumers, default 1), CreateThingRate
// (iot_create_thing_rate, default 100), CreateThingTypeRate (default 15), BudgetWait (default 5s).
package awsiot

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgw/coapgw/internal/processor"
)

// ruleName is an IoT rule's name, as a Basic Ingest topic ($aws/rules/<rule>/…) names it.
var ruleName = regexp.MustCompile(`^[a-zA-Z0-9_]{1,128}$`)

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
	// PublishPack publishes one message per thing and batch holding {"records":[envelope,…]}
	// (at most 128 KB, split beyond) instead of one per record: IoT's Publish API takes one
	// message per call, and messaging is metered per message (in 5 KB units).
	PublishPack bool
	// DataEndpoint is the IoT data endpoint (host or URL) of the account, as DescribeEndpoint
	// with iot:Data-ATS reports it. Empty: aws.Config.BaseEndpoint if set, else DescribeEndpoint.
	DataEndpoint string
	// ThingCacheSize bounds the things remembered (type, shadow version and state); default
	// 100000.
	ThingCacheSize int
	// ThingCacheBytes bounds the memory of the things remembered, estimated per thing
	// (thingCost: about 3.1 KB for a state of 20 numeric properties, 170 bytes in Ordered mode);
	// default 64 MiB.
	ThingCacheBytes int
	// TypeCacheSize bounds the thing types remembered as existing; default 10000.
	TypeCacheSize int
	// Concurrency is the number of things updated at once within a batch; default 32.
	Concurrency int
	// MaxAttempts is the SDK's attempts per call (adaptive retry mode); default 5.
	MaxAttempts int
	// ConflictRetries bounds the re-reads after version conflicts in one Apply; default 5.
	ConflictRetries int
	// Ordered says the queue is FIFO with one message group per thing (the forwarder's
	// MessageGroupId): a thing's batches reach one consumer at a time, in order. Shadows are then
	// written blindly (one UpdateThingShadow per thing per batch, no read, nothing of coapgw's in
	// the reported state); the thing's type is kept in its named shadow RegistryShadow.
	Ordered bool
	// CreateThingRate and CreateThingTypeRate are the account's rates for CreateThing and
	// CreateThingType (calls/s; defaults 100 and 15, AWS IoT's), shared by Consumers consumers:
	// each paces its calls to rate/Consumers (default 1). BudgetWait is the longest a thing's
	// creation waits for this consumer's share within a batch (default 5s, and never past the
	// batch's deadline); beyond, its records are deferred (processor.Deferred).
	CreateThingRate, CreateThingTypeRate int
	Consumers                            int
	BudgetWait                           time.Duration
	// AdoptThings makes a thing that already exists (with any type, or none: fleet provisioning
	// and JITP create such things) usable as it is; its type is never changed, and records of
	// any type are applied to it. Off: such a thing is a permanent error for records of another
	// type.
	AdoptThings bool
	// SeedShadow (--seed-shadow) creates thing types with their name as description and things
	// with the attribute FirstSeen, as the 2018 CoAP-to-AWS-IoT processor did (seedshadow.go).
	SeedShadow bool
}

func (c *Config) setDefaults() {
	if c.ThingCacheSize == 0 {
		c.ThingCacheSize = 100_000
	}
	if c.ThingCacheBytes == 0 {
		c.ThingCacheBytes = 64 << 20
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
	if c.CreateThingRate == 0 {
		c.CreateThingRate = 100
	}
	if c.CreateThingTypeRate == 0 {
		c.CreateThingTypeRate = 15
	}
	if c.Consumers == 0 {
		c.Consumers = 1
	}
	if c.BudgetWait == 0 {
		c.BudgetWait = 5 * time.Second
	}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.ThingCacheSize < 0 || c.TypeCacheSize < 0 || c.ThingCacheBytes < 0 {
		errs = append(errs, errors.New("awsiot: cache sizes must not be negative"))
	}
	if c.Concurrency < 0 || c.Concurrency > 1024 {
		errs = append(errs, fmt.Errorf("awsiot: concurrency %d: want 1–1024", c.Concurrency))
	}
	if c.MaxAttempts < 0 || c.ConflictRetries < 0 {
		errs = append(errs, errors.New("awsiot: attempts must not be negative"))
	}
	if c.CreateThingRate < 0 || c.CreateThingTypeRate < 0 || c.Consumers < 0 || c.BudgetWait < 0 {
		errs = append(errs, errors.New("awsiot: control-plane rates, consumers and budget wait must not be negative"))
	}
	if t := c.PublishTopic; t != "" {
		if strings.ContainsAny(t, "+#") || strings.HasPrefix(t, "/") || len(t) > 256 {
			errs = append(errs, fmt.Errorf("awsiot: publish topic %q: no wildcards, no leading '/', at most 256 bytes", t))
		}
		if rest, ok := strings.CutPrefix(t, "$aws/rules/"); ok {
			rule, _, _ := strings.Cut(rest, "/")
			if !ruleName.MatchString(rule) {
				errs = append(errs, fmt.Errorf("awsiot: publish topic %q: Basic Ingest wants $aws/rules/<rule name: letters, digits, _>/…", t))
			}
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
	known  *lru[string, known] // Ordered mode's things
	types  *lru[string, struct{}]

	flightMu sync.Mutex
	flights  map[string]*flight // thing types being created

	// This consumer's share of the account's control-plane rates (budget.go).
	thingBudget, typeBudget *bucket

	pubMu    sync.Mutex
	pubBatch *processor.Batch // the batch published records belong to (retries reuse the batch)
	pubDone  []bool

	// Ordered mode: the things of the batch in hand already written, so that the processor's
	// retry of the batch after a transient failure writes only the others.
	writtenMu    sync.Mutex
	writtenBatch *processor.Batch
	written      map[string]bool

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
		things:   newByteLRU[string](cfg.ThingCacheSize, cfg.ThingCacheBytes, thingCost),
		known:    newByteLRU[string](cfg.ThingCacheSize, cfg.ThingCacheBytes, knownCost),
		types:    newLRU[string, struct{}](cfg.TypeCacheSize),
		flights:  make(map[string]*flight),
		lockSeed: maphash.MakeSeed(),

		thingBudget: newBucket(float64(cfg.CreateThingRate) / float64(cfg.Consumers)),
		typeBudget:  newBucket(float64(cfg.CreateThingTypeRate) / float64(cfg.Consumers)),
		now:         time.Now,
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
