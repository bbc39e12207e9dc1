# Alarms -> one SNS topic (optional e-mail subscription). Runbooks: docs/deploy-aws.md.

resource "aws_sns_topic" "alarms" {
  # checkov:skip=CKV_AWS_26:CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed SNS key, and alarm notifications carry no sensitive data.
  name = "${var.name}-alarms"
  tags = local.tags
}

resource "aws_sns_topic_subscription" "email" {
  count     = var.alarm_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

locals {
  alarm_actions = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "queue_age" {
  alarm_name          = "${var.name}-queue-oldest-message-age"
  alarm_description   = "Records wait in ${aws_sqs_queue.main.name} longer than ${var.queue_age_alarm_seconds}s: the processor is failing or throttled. Runbook: docs/deploy-aws.md#queue-age"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.main.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = var.queue_age_alarm_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "dlq_visible" {
  alarm_name          = "${var.name}-dlq-not-empty"
  alarm_description   = "Records reached ${aws_sqs_queue.dlq.name} after 5 failed receives. Runbook: docs/deploy-aws.md#dlq"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dlq.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "lambda_errors" {
  alarm_name          = "${var.name}-processor-errors"
  alarm_description   = "The processor Lambda failed whole invocations. Runbook: docs/deploy-aws.md#lambda-errors"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.processor.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "lambda_throttles" {
  alarm_name          = "${var.name}-processor-throttles"
  alarm_description   = "The processor Lambda is throttled (account or reserved concurrency). Runbook: docs/deploy-aws.md#lambda-throttles"
  namespace           = "AWS/Lambda"
  metric_name         = "Throttles"
  dimensions          = { FunctionName = aws_lambda_function.processor.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 2
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "canary" {
  count               = local.canary ? 1 : 0
  alarm_name          = "${var.name}-canary-failures"
  alarm_description   = "A gateway did not answer CoAP GET /health over DTLS. Runbook: docs/deploy-aws.md#canary"
  namespace           = local.canary_namespace
  metric_name         = "HealthCheckFailed"
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  # No data means the canary itself is not running: that is a failure too.
  treat_missing_data = "breaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = local.tags
}

# Gateways' own view (EMF, monitoring.tf): the oldest record not yet accepted by SQS, over all
# gateways. Missing data (no agent, no gateway) is not this alarm's business: the canary's is.
resource "aws_cloudwatch_metric_alarm" "gateway_lag" {
  alarm_name          = "${var.name}-gateway-lag"
  alarm_description   = "A gateway has held a record for more than ${var.gateway_lag_alarm_seconds}s without SQS accepting it: the queue is unreachable, denied or throttled, and the spool fills. Runbook: docs/deploy-aws.md#gateway-lag"
  namespace           = local.metrics_namespace
  metric_name         = "StageLagSeconds"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = var.gateway_lag_alarm_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# Ingest stopped: nothing sent to the queue for N minutes. SQS reports NumberOfMessagesSent
# every minute for an active queue; no data at all counts as breaching too.
resource "aws_cloudwatch_metric_alarm" "ingest_stopped" {
  count               = var.ingest_stopped_alarm_minutes > 0 ? 1 : 0
  alarm_name          = "${var.name}-ingest-stopped"
  alarm_description   = "No record reached ${aws_sqs_queue.main.name} for ${var.ingest_stopped_alarm_minutes} minutes: gateways down or unreachable, or the devices silent. Runbook: docs/deploy-aws.md#ingest-stopped"
  namespace           = "AWS/SQS"
  metric_name         = "NumberOfMessagesSent"
  dimensions          = { QueueName = aws_sqs_queue.main.name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = var.ingest_stopped_alarm_minutes
  datapoints_to_alarm = var.ingest_stopped_alarm_minutes
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# Records the processor set aside (kept out of the shadow: bad payload, too large, ...).
resource "aws_cloudwatch_metric_alarm" "set_aside" {
  alarm_name          = "${var.name}-records-set-aside"
  alarm_description   = "The processor set records aside (they did not reach the shadow). Runbook: docs/deploy-aws.md#set-aside"
  namespace           = local.metrics_namespace
  metric_name         = aws_cloudwatch_log_metric_filter.set_aside.metric_transformation[0].name
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}
