# The processor: cmd/coapgw-lambda on provided.al2023/arm64, invoked by the queue's event source
# mapping with ReportBatchItemFailures (only failed records come back to the queue).

resource "aws_cloudwatch_log_group" "processor" {
  # checkov:skip=CKV_AWS_158:Logs hold record metadata only (no secrets); the CloudWatch Logs default encryption applies. Pass a KMS key in a fork if policy requires one.
  name              = "/aws/lambda/${var.name}-processor"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

resource "aws_lambda_function" "processor" {
  # checkov:skip=CKV_AWS_50:X-Ray tracing needs xray:PutTraceSegments on Resource "*", which this module's no-wildcard IAM policy rules out; the handler logs and CloudWatch metrics cover it.
  # checkov:skip=CKV_AWS_116:The function is invoked by an SQS event source mapping; failed records go to the queue's own DLQ (redrive policy), a function DLQ would never be used.
  # checkov:skip=CKV_AWS_117:The function only calls public AWS APIs (SQS, AWS IoT); running it in a VPC would need NAT or interface endpoints for no isolation gain.
  # checkov:skip=CKV_AWS_173:The environment holds no secrets (endpoint name, topic, tuning numbers); the Lambda service key encrypts it at rest.
  # checkov:skip=CKV_AWS_272:Code signing needs an AWS Signer profile outside this module; the zip is built by `make lambda-zip` in CI and its hash is tracked by source_code_hash.
  function_name    = "${var.name}-processor"
  description      = "coapgw: applies queued CoAP telemetry records to AWS IoT (thing types, things, shadows)"
  role             = aws_iam_role.processor.arn
  filename         = var.lambda_zip_path
  source_code_hash = filebase64sha256(var.lambda_zip_path)
  handler          = "bootstrap"
  runtime          = "provided.al2023"
  architectures    = ["arm64"]
  memory_size      = var.lambda_memory_mb
  timeout          = var.lambda_timeout_seconds

  reserved_concurrent_executions = var.lambda_reserved_concurrency

  environment {
    variables = merge(
      {
        COAPGW_IOT_DATA_ENDPOINT = data.aws_iot_endpoint.data.endpoint_address
        COAPGW_PUBLISH_TOPIC     = var.publish_topic
        COAPGW_LOG_LEVEL         = "info"
        COAPGW_FIFO_QUEUE        = tostring(var.fifo_queue)
        # The consumers sharing the account's CreateThing/CreateThingType rates: each Lambda
        # environment paces itself to 1/N of them.
        COAPGW_IOT_CONSUMERS = tostring(var.event_source_max_concurrency)
      },
      var.lambda_environment,
    )
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.processor.name
  }

  tags = local.tags

  depends_on = [aws_iam_role_policy.processor]
}

resource "aws_lambda_event_source_mapping" "processor" {
  event_source_arn                   = aws_sqs_queue.main.arn
  function_name                      = aws_lambda_function.processor.arn
  batch_size                         = var.fifo_queue ? min(var.event_source_batch_size, 10) : var.event_source_batch_size
  maximum_batching_window_in_seconds = var.fifo_queue ? null : var.event_source_batching_window_seconds
  function_response_types            = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.event_source_max_concurrency
  }
}
