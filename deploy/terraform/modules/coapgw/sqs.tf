# The queue the gateways forward records to, and its dead-letter queue. A record the processor
# fails to apply five times (maxReceiveCount) moves to the DLQ, which raises an alarm.

resource "aws_sqs_queue" "dlq" {
  # checkov:skip=CKV2_AWS_73:SQS-managed SSE (sqs_managed_sse_enabled) is the chosen encryption; a customer-managed KMS key would add per-request KMS cost and key-policy coupling with no extra protection here.
  name                      = var.fifo_queue ? "${var.name}-dlq.fifo" : "${var.name}-dlq"
  fifo_queue                = var.fifo_queue ? true : null
  message_retention_seconds = var.dlq_message_retention_seconds
  sqs_managed_sse_enabled   = true
  tags                      = local.tags
}

resource "aws_sqs_queue" "main" {
  # checkov:skip=CKV2_AWS_73:SQS-managed SSE (sqs_managed_sse_enabled) is the chosen encryption; see the DLQ.
  name                      = var.fifo_queue ? "${var.name}.fifo" : var.name
  message_retention_seconds = var.queue_message_retention_seconds
  # FIFO: ordered per thing (the gateways set MessageGroupId = thing and a deduplication id);
  # high-throughput mode, since the limits then apply per message group.
  fifo_queue            = var.fifo_queue ? true : null
  deduplication_scope   = var.fifo_queue ? "messageGroup" : null
  fifo_throughput_limit = var.fifo_queue ? "perMessageGroupId" : null
  # AWS: at least 6x the function timeout for an SQS event source, so a batch being retried
  # inside one invocation is not handed to a second one.
  visibility_timeout_seconds = 6 * var.lambda_timeout_seconds
  receive_wait_time_seconds  = 20
  sqs_managed_sse_enabled    = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = 5
  })

  tags = local.tags
}

# Only the main queue may use this DLQ.
resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  queue_url = aws_sqs_queue.dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.main.arn]
  })
}
