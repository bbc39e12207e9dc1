// Package consume drives the processor core from Amazon SQS: Worker is the long-running consumer
// (`coapgw process`), Handler the core of the Lambda function (cmd/coapgw-lambda). Both decode
// each message body (internal/envelope: the envelope, or the 2018 ingestor's message, detected
// per message) into a record, hand the records to the processor (which
// coalesces them per thing and applies them to its sink, AWS IoT in production) and acknowledge
// each message by what became of its record:
//
//   - applied or duplicate: the message is deleted (Worker: DeleteMessageBatch; Lambda: not
//     reported as a failure, so the event source mapping deletes it) — only after the sink
//     succeeded for it;
//   - set aside (a permanent failure: undecodable body, invalid payload, thing/type conflict,
//     shadow limits): the message is left in the queue, visible again at once (Worker:
//     Config.SetAsideVisibility, default 0; Lambda: reported in batchItemFailures), so that the
//     queue's redrive policy moves it to the dead-letter queue after maxReceiveCount receives.
//     Nothing waits for it: the records behind it are applied and deleted meanwhile. The reason
//     is logged (with the receive count) and counted;
//   - deferred (the sink could not apply it now: this consumer's share of the control-plane rate
//     is spent, or AWS throttled it; the rest of the batch is applied): Worker:
//     ChangeMessageVisibility to the delay the sink asked for (Outcome.After, spread by up to a
//     quarter); Lambda: reported in batchItemFailures at once, back after the queue's visibility
//     timeout. Every receive counts toward maxReceiveCount (docs/aws-processing.md, "Throttling");
//   - not finished (the sink kept failing transiently until the batch's deadline, or the worker
//     is stopping): Worker: ChangeMessageVisibility with exponential backoff by receive count
//     (Config.BackoffMin·2^(n−1), capped at BackoffMax), or 0 when stopping so another worker
//     takes it at once; Lambda: reported in batchItemFailures.
//
// Redelivery is harmless: the processor and its sink are idempotent and keep the newest value of
// every property by received_at (docs/aws-processing.md).
//
// Worker metrics (registered on the Registerer given to New):
//
//	coapgw_consume_received_total                 messages received
//	coapgw_consume_messages_total{result}         messages acknowledged, by result: deleted,
//	                                              set_aside (left for the DLQ), deferred
//	                                              (throttled, returned), retry (returned
//	                                              with backoff after a transient failure),
//	                                              released (returned at once on stop)
//	coapgw_consume_sqs_errors_total{operation}    failed SQS calls or entries: ReceiveMessage,
//	                                              DeleteMessageBatch, ChangeMessageVisibilityBatch
//	coapgw_consume_batch_messages                 histogram of messages per processed batch
//	coapgw_consume_inflight_messages              gauge: received, not yet acknowledged
//
// Configuration (Config; flags and COAPGW_* variables in `coapgw process`): QueueURL (--queue,
// COAPGW_QUEUE), Pollers (--pollers, default 4), WaitTime (20s long polling), MaxMessages (10 per
// receive), VisibilityTimeout (--visibility-timeout, default 60s, requested on every receive),
// BatchSize (--batch-size, default 1000 messages per processor batch), BatchWait (--batch-wait,
// default 250ms to gather a batch), BackoffMin/BackoffMax (1s/5m), SetAsideVisibility (0),
// StopTimeout (--stop-timeout, default 15s for the current batch on stop).
package consume

import (
	"context"
	"log/slog"

	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/processor"
)

// Processor is what the drivers need of the processor core; *processor.Processor implements
// it. Process is called from one goroutine at a time.
type Processor interface {
	Process(ctx context.Context, inputs []processor.Input) ([]processor.Outcome, error)
}

var _ Processor = (*processor.Processor)(nil)

// decodeBody turns an SQS message body into the processor's input: the record, decoded once
// from the envelope, with its gateway sequence number, or from the 2018 CoAP-to-AWS-IoT
// ingestor's message (envelope.DecodeAny tells them apart per message, so gateways and old
// ingestors can feed one queue). A body that is neither is an error: the message is set aside
// here, without reaching the processor.
func decodeBody(body string) (processor.Input, error) {
	rec, err := envelope.DecodeAny(body)
	if err != nil {
		return processor.Input{}, err
	}
	return processor.Input{Record: rec}, nil
}

// logSetAside tells the operator why a record was set aside: the worker and the Lambda handler
// log the same line, with receives as a number in both.
func logSetAside(log *slog.Logger, messageID string, receives int, reason string) {
	log.Warn("record set aside; the queue's redrive policy moves it to the DLQ after maxReceiveCount receives",
		"message_id", messageID, "receives", receives, "reason", reason)
}
