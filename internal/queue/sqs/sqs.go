// Package sqs publishes records to an Amazon SQS queue: it implements forward.Publisher with
// SendMessageBatch, one envelope (internal/envelope, docs/envelope.md) per message.
//
// Each Publish packs its records into as few SendMessageBatch requests as SQS allows: at most 10
// entries and at most 1,048,576 bytes (1 MiB) per request, counting each message's body plus its
// attributes' names, types and values as SQS does. A record whose message alone exceeds the limit,
// or that cannot be put in an envelope, is refused without a call (an error wrapping
// forward.ErrRejected). Entries in the response's Failed list are reported one by one: a sender
// fault wraps forward.ErrRejected (the forwarder retries it alone a few times, then drops it), a
// throttling code wraps forward.ErrThrottled, anything else (server fault) is transient. Errors of a
// whole request are classified the same way (throttling → ErrThrottled; BatchRequestTooLong,
// TooManyEntriesInBatchRequest, InvalidMessageContents → ErrRejected; the rest transient, retried
// without end: access denied, a missing queue and outages are fixed by operators, not by dropping
// data).
//
// With Config.Seed (--envelope seed) the body is the 2018 CoAP-to-AWS-IoT ingestor's message
// (envelope.AppendSeed) for every record it can carry — a JSON payload; anything else (a record
// spooled before the switch) keeps the envelope, which coapgw's consumers read as well.
//
// Messages carry the String attributes coapgw-type and coapgw-thing. Standard queues by default;
// a FIFO queue (URL ending in ".fifo", or Config.FIFO) gets MessageGroupId = thing name (the
// record's id) and MessageDeduplicationId = gw + "-" + incarnation + "-" + seq (Config.Incarnation,
// the spool's; gw + "-" + seq without one), replaced by a SHA-256-based id when that
// is longer than 128 characters or holds characters SQS does not allow there. The forwarder sends
// several batches at once and retries records on their own, so a FIFO queue sees per-thing order
// only roughly; the processor does not depend on order (received_at decides).
//
// Credentials and region come from the aws.Config given to New; NewFromDefaultConfig loads the SDK
// default chain (environment, shared files, instance or Lambda role) and takes the region from the
// queue URL when none is configured. The IAM permission needed is sqs:SendMessage on the queue. The SDK's own retryer
// stays in place for quick retries of single requests; the forwarder's backoff is on top of it.
//
// The package has no metrics of its own: the forwarder counts calls, their duration and outcomes.
//
// Configuration (flag, COAPGW_* variable and YAML key from internal/config): Config.QueueURL
// (--queue), Config.FIFO (--fifo-queue), Config.MaxBatchBytes (--queue-max-batch-bytes, default
// 1 MiB), Config.Seed (--envelope seed).
package sqs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/forward"
	"github.com/coapgw/coapgw/internal/record"
)

// SQS limits.
const (
	MaxBatchEntries = 10        // entries per SendMessageBatch
	MaxBatchBytes   = 1_048_576 // bytes per SendMessageBatch (sum of messages) and per message
	maxIDLength     = 128       // MessageGroupId, MessageDeduplicationId
)

// sqsAPI is the part of the SQS client the publisher uses.
type sqsAPI interface {
	SendMessageBatch(ctx context.Context, in *awssqs.SendMessageBatchInput, optFns ...func(*awssqs.Options)) (*awssqs.SendMessageBatchOutput, error)
}

var (
	_ sqsAPI            = (*awssqs.Client)(nil)
	_ forward.Publisher = (*Publisher)(nil)
)

// Config configures a Publisher.
type Config struct {
	QueueURL      string // required
	FIFO          bool   // treat the queue as FIFO even if the URL does not end in ".fifo"
	MaxBatchBytes int    // bytes per request; default and maximum MaxBatchBytes
	// Seed writes the 2018 CoAP-to-AWS-IoT ingestor's message instead of the envelope
	// (--envelope seed; envelope.AppendSeed). A record that message cannot carry (not JSON)
	// goes out in the envelope, which coapgw's consumers read as well.
	Seed bool
	// Incarnation names the spool the records come from (spool.Disk.Incarnation): FIFO
	// deduplication ids are gw-incarnation-seq, so a spool that reuses an earlier spool's gateway
	// id and sequence numbers (a replacement instance) does not have its records dropped as
	// duplicates, while a record sent again from the same spool keeps its id. Empty: gw-seq.
	Incarnation string
}

// Publisher sends records to one SQS queue. It is safe for concurrent use.
type Publisher struct {
	api      sqsAPI
	url      *string
	fifo     bool
	seed     bool
	maxBytes int
	dedupSep string // "-" + Config.Incarnation + "-", or "-"
}

// New builds a Publisher on an SQS client made from awsCfg (and optFns); it does no I/O.
func New(cfg Config, awsCfg aws.Config, optFns ...func(*awssqs.Options)) (*Publisher, error) {
	return newPublisher(cfg, awssqs.NewFromConfig(awsCfg, optFns...))
}

// NewFromDefaultConfig builds a Publisher with the SDK's default configuration: credentials and
// region from the environment, shared config files and the instance or Lambda role. When no region
// is configured it is taken from the queue URL (https://sqs.<region>.amazonaws.com/...). It reads
// the environment and config files but makes no network call.
func NewFromDefaultConfig(ctx context.Context, cfg Config, optFns ...func(*awssqs.Options)) (*Publisher, error) {
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqs: load AWS config: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = RegionFromURL(cfg.QueueURL)
	}
	return New(cfg, awsCfg, optFns...)
}

// RegionFromURL returns the region in an SQS queue URL (sqs.<region>.amazonaws.com[.cn], or the
// legacy <region>.queue.amazonaws.com), or "" if it has none.
func RegionFromURL(queueURL string) string {
	u, err := url.Parse(queueURL)
	if err != nil {
		return ""
	}
	parts := strings.Split(u.Hostname(), ".")
	switch {
	case len(parts) >= 4 && parts[0] == "sqs" && parts[2] == "amazonaws":
		return parts[1]
	case len(parts) >= 4 && parts[1] == "queue" && parts[2] == "amazonaws":
		return parts[0]
	}
	return ""
}

func newPublisher(cfg Config, api sqsAPI) (*Publisher, error) {
	if cfg.QueueURL == "" {
		return nil, errors.New("sqs: queue URL is required")
	}
	u, err := url.Parse(cfg.QueueURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.Trim(u.Path, "/") == "" {
		return nil, fmt.Errorf("sqs: queue URL %q is not an http(s) URL with a queue path", cfg.QueueURL)
	}
	if cfg.MaxBatchBytes < 0 || cfg.MaxBatchBytes > MaxBatchBytes {
		return nil, fmt.Errorf("sqs: max batch bytes %d not in 1..%d", cfg.MaxBatchBytes, MaxBatchBytes)
	}
	if cfg.MaxBatchBytes == 0 {
		cfg.MaxBatchBytes = MaxBatchBytes
	}
	if len(cfg.Incarnation) > 32 || !validIDChars(cfg.Incarnation) {
		return nil, fmt.Errorf("sqs: incarnation %q must be at most 32 characters from ASCII 0x21-0x7E", cfg.Incarnation)
	}
	return &Publisher{
		api:      api,
		url:      aws.String(cfg.QueueURL),
		fifo:     cfg.FIFO || strings.HasSuffix(u.Path, ".fifo"),
		seed:     cfg.Seed,
		maxBytes: cfg.MaxBatchBytes,
		dedupSep: dedupSep(cfg.Incarnation),
	}, nil
}

// FIFO reports whether the publisher treats the queue as FIFO.
func (p *Publisher) FIFO() bool { return p.fifo }

// MaxBatch is the number of entries SQS takes in one SendMessageBatch.
func (p *Publisher) MaxBatch() int { return MaxBatchEntries }

// EntryError is the failure of one entry reported in a SendMessageBatch response's Failed list.
type EntryError struct {
	Code        string
	Message     string
	SenderFault bool
}

func (e *EntryError) Error() string {
	fault := "server fault"
	if e.SenderFault {
		fault = "sender fault"
	}
	return fmt.Sprintf("sqs entry failed: %s (%s): %s", e.Code, fault, e.Message)
}

// classifyEntry marks a per-entry failure for the forwarder.
func classifyEntry(e *EntryError) error {
	switch {
	case isThrottleCode(e.Code):
		return fmt.Errorf("%w: %w", forward.ErrThrottled, e)
	case e.SenderFault:
		return fmt.Errorf("%w: %w", forward.ErrRejected, e)
	default:
		return e
	}
}

func isThrottleCode(code string) bool {
	code = strings.TrimPrefix(code, "AWS.SimpleQueueService.")
	_, ok := retry.DefaultThrottleErrorCodes[code]
	return ok || strings.Contains(code, "Throttl")
}

// classify marks the error of a whole SendMessageBatch request for the forwarder.
func classify(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var (
		tooLong   *types.BatchRequestTooLong
		tooMany   *types.TooManyEntriesInBatchRequest
		contents  *types.InvalidMessageContents
		throttled *types.RequestThrottled
		kms       *types.KmsThrottled
		api       smithy.APIError
		resp      *awshttp.ResponseError
	)
	switch {
	case errors.As(err, &throttled), errors.As(err, &kms),
		errors.As(err, &api) && isThrottleCode(api.ErrorCode()),
		errors.As(err, &resp) && resp.HTTPStatusCode() == http.StatusTooManyRequests:
		return fmt.Errorf("sqs: send message batch: %w: %w", forward.ErrThrottled, err)
	case errors.As(err, &tooLong), errors.As(err, &tooMany), errors.As(err, &contents):
		return fmt.Errorf("sqs: send message batch: %w: %w", forward.ErrRejected, err)
	}
	return fmt.Errorf("sqs: send message batch: %w", err)
}

// request is one SendMessageBatch being assembled: entries and the indexes of their records.
type request struct {
	entries []types.SendMessageBatchRequestEntry
	index   []int
	bytes   int
}

// Publish sends recs with as few SendMessageBatch requests as the limits allow (one for up to 10
// records of normal size). See forward.Publisher for the meaning of the results.
func (p *Publisher) Publish(ctx context.Context, recs []record.Record) ([]error, error) {
	var (
		errs    []error
		reqs    []*request
		refused int
	)
	setErr := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(recs))
		}
		errs[i] = err
	}
	var cur *request
	for i := range recs {
		e, size, err := p.entry(&recs[i], i)
		if err != nil {
			setErr(i, err)
			refused++
			continue
		}
		if cur == nil || len(cur.entries) == MaxBatchEntries || cur.bytes+size > p.maxBytes {
			cur = &request{}
			reqs = append(reqs, cur)
		}
		cur.entries = append(cur.entries, e)
		cur.index = append(cur.index, i)
		cur.bytes += size
	}
	var (
		callErr    error
		callFailed int
	)
	for _, rq := range reqs {
		out, err := p.api.SendMessageBatch(ctx, &awssqs.SendMessageBatchInput{QueueUrl: p.url, Entries: rq.entries})
		if err != nil {
			err = classify(err)
			callFailed++
			if callErr == nil {
				callErr = err
			}
			for _, i := range rq.index {
				setErr(i, err)
			}
			continue
		}
		p.collect(rq, out, recs, setErr)
	}
	if callFailed > 0 && callFailed == len(reqs) && refused == 0 {
		return nil, callErr // nothing was accepted: a whole-call failure
	}
	return errs, nil
}

// collect applies a SendMessageBatch response: Failed entries get their error; entries the
// response does not mention are treated as failed (transiently).
func (p *Publisher) collect(rq *request, out *awssqs.SendMessageBatchOutput, recs []record.Record, setErr func(int, error)) {
	seen := make([]bool, len(rq.entries))
	mark := func(id *string) (int, bool) {
		k, err := strconv.Atoi(aws.ToString(id))
		if err != nil {
			return 0, false
		}
		for j, i := range rq.index {
			if i == k && !seen[j] {
				seen[j] = true
				return i, true
			}
		}
		return 0, false
	}
	for _, s := range out.Successful {
		mark(s.Id)
	}
	for _, f := range out.Failed {
		if i, ok := mark(f.Id); ok {
			setErr(i, classifyEntry(&EntryError{Code: aws.ToString(f.Code), Message: aws.ToString(f.Message), SenderFault: f.SenderFault}))
		}
	}
	for j, ok := range seen {
		if !ok {
			setErr(rq.index[j], fmt.Errorf("sqs: no result for entry %d (seq %d) in the response", rq.index[j], recs[rq.index[j]].Seq))
		}
	}
}

// entry builds the batch entry for one record and returns its size as SQS counts it.
func (p *Publisher) entry(rec *record.Record, i int) (types.SendMessageBatchRequestEntry, int, error) {
	body, err := p.body(rec)
	if err != nil {
		return types.SendMessageBatchRequestEntry{}, 0, fmt.Errorf("%w: %w", forward.ErrRejected, err)
	}
	e := types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(body)}
	size := len(body)
	for _, a := range [...]struct{ name, value string }{{envelope.AttrType, rec.Type}, {envelope.AttrThing, rec.ID}} {
		if a.value == "" || !envelope.Allowed([]byte(a.value)) {
			continue
		}
		if e.MessageAttributes == nil {
			e.MessageAttributes = make(map[string]types.MessageAttributeValue, 2)
		}
		e.MessageAttributes[a.name] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(a.value)}
		size += len(a.name) + len("String") + len(a.value)
	}
	if size > p.maxBytes {
		return e, 0, fmt.Errorf("%w: message of %d bytes exceeds the %d-byte limit", forward.ErrRejected, size, p.maxBytes)
	}
	if p.fifo {
		e.MessageGroupId = aws.String(fifoID(rec.ID, ""))
		e.MessageDeduplicationId = aws.String(fifoID(rec.GW, p.dedupSep+strconv.FormatUint(rec.Seq, 10)))
	}
	return e, size, nil
}

// body is the message body for rec: the envelope, or with Config.Seed the 2018 message when it
// can carry the record.
func (p *Publisher) body(rec *record.Record) (string, error) {
	if p.seed {
		b, err := envelope.AppendSeed(make([]byte, 0, 128+len(rec.Payload)*5/4), rec)
		if err == nil {
			return string(b), nil
		}
		if !errors.Is(err, envelope.ErrNotSeed) {
			return "", err
		}
	}
	return envelope.Encode(*rec)
}

// dedupSep is what goes between the gateway id and the sequence number in a deduplication id.
func dedupSep(incarnation string) string {
	if incarnation == "" {
		return "-"
	}
	return "-" + incarnation + "-"
}

// fifoID returns s+suffix if it is a valid MessageGroupId/MessageDeduplicationId (1–128 characters
// from ASCII 0x21–0x7E), else a stable substitute made from a SHA-256 of s.
func fifoID(s, suffix string) string {
	id := s + suffix
	if len(id) <= maxIDLength && validIDChars(id) && id != "" {
		return id
	}
	sum := sha256.Sum256([]byte(s))
	return "sha256-" + hex.EncodeToString(sum[:16]) + suffix
}

func validIDChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7E {
			return false
		}
	}
	return true
}
