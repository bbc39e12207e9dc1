package consume

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/coapgw/coapgw/internal/processor"
)

// Handler is the core of the Lambda function: an SQS event source mapping with
// ReportBatchItemFailures calls HandleSQSEvent with a batch of messages.
type Handler struct {
	proc Processor
	log  *slog.Logger
	// Margin is how long before the invocation's deadline processing is abandoned, so that the
	// handler can still answer with the unfinished records as failures (default 2s).
	Margin time.Duration

	mu sync.Mutex // Process is called from one goroutine at a time
}

// NewHandler returns a handler applying records with proc.
func NewHandler(proc Processor, log *slog.Logger) (*Handler, error) {
	if proc == nil {
		return nil, errors.New("consume: nil processor")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{proc: proc, log: log, Margin: 2 * time.Second}, nil
}

// HandleSQSEvent processes the event's records and reports, in batchItemFailures, the messages
// that must come back: the ones set aside (permanent failures, which the queue's redrive policy
// moves to the DLQ after maxReceiveCount receives), the ones deferred (throttled: reported as soon
// as the sink gives up on them, the rest of the batch applied) and, if the sink kept failing
// transiently until the deadline, every message not yet applied. It never returns an error, which would make the
// whole batch come back.
func (h *Handler) HandleSQSEvent(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var (
		resp   events.SQSEventResponse
		inputs = make([]processor.Input, 0, len(ev.Records))
		owners = make([]*events.SQSMessage, 0, len(ev.Records))
	)
	fail := func(m *events.SQSMessage) {
		resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: m.MessageId})
	}
	// Messages received more often first (see Worker.handle): records deferred before get the
	// control-plane budget before fresh ones.
	order := make([]int, len(ev.Records))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return lambdaReceives(&ev.Records[b]) - lambdaReceives(&ev.Records[a]) })
	for _, i := range order {
		m := &ev.Records[i]
		in, err := decodeBody(m.Body)
		if err != nil {
			logSetAside(h.log, m.MessageId, lambdaReceives(m), "undecodable message: "+err.Error())
			fail(m)
			continue
		}
		inputs = append(inputs, in)
		owners = append(owners, m)
	}
	if len(inputs) == 0 {
		return resp, nil
	}
	pctx := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		pctx, cancel = context.WithDeadline(ctx, dl.Add(-h.Margin))
		defer cancel()
	}
	out, err := h.proc.Process(pctx, inputs)
	if err == nil && len(out) != len(inputs) {
		err = errors.New("processor returned the wrong number of outcomes")
	}
	if err != nil {
		h.log.Warn("batch not finished; its messages go back to the queue", "err", err, "messages", len(owners))
		for _, m := range owners {
			fail(m)
		}
		return resp, nil
	}
	deferred := 0
	for i, o := range out {
		switch o.Result {
		case processor.SetAside:
			m := owners[i]
			logSetAside(h.log, m.MessageId, lambdaReceives(m), o.Reason)
			fail(m)
		case processor.Deferred:
			// Not applied and not tried further (throttled): back to the queue now, with the
			// others of the batch applied and deleted.
			fail(owners[i])
			deferred++
		}
	}
	if deferred > 0 {
		h.log.Info("records deferred; they come back after the queue's visibility timeout", "records", deferred, "messages", len(ev.Records))
	}
	return resp, nil
}

// lambdaReceives is the message's ApproximateReceiveCount (0 if absent or not a number).
func lambdaReceives(m *events.SQSMessage) int {
	n, _ := strconv.Atoi(m.Attributes["ApproximateReceiveCount"])
	return n
}
