# Canary: cmd/coapgw-canary sends CoAP GET /health over DTLS to every gateway address on a
# schedule and publishes HealthCheckOK / HealthCheckFailed / LatencyMs to CloudWatch (namespace
# below). It authenticates as its own identity (canary/<name>), whose PSK it derives from the
# fleet key secret exactly as a device's is derived, so a gateway that cannot read the secret or
# derive keys fails the canary.

locals {
  canary           = var.canary_zip_path != ""
  canary_namespace = local.metrics_namespace # shared with the gateways' EMF metrics
  canary_identity  = var.canary_identity != "" ? var.canary_identity : "canary/${var.name}"
  canary_targets = length(var.canary_targets) > 0 ? var.canary_targets : (
    local.use_nlb ? ["${aws_lb.coap[0].dns_name}:${var.coaps_port}"] : [for e in aws_eip.gateway : "${e.public_ip}:${var.coaps_port}"]
  )
}

resource "aws_cloudwatch_log_group" "canary" {
  # checkov:skip=CKV_AWS_158:Canary logs hold probe results only; the CloudWatch Logs default encryption applies.
  count             = local.canary ? 1 : 0
  name              = "/aws/lambda/${var.name}-canary"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

resource "aws_lambda_function" "canary" {
  # checkov:skip=CKV_AWS_50:X-Ray needs Resource "*" grants, ruled out by this module's IAM policy; the canary's own metric is the signal.
  # checkov:skip=CKV_AWS_116:A scheduled probe: a failed run is simply the next minute's run, there is nothing to dead-letter.
  # checkov:skip=CKV_AWS_117:The canary must probe the gateways' public addresses as a device would, from outside the VPC.
  # checkov:skip=CKV_AWS_173:The environment holds gateway addresses, a namespace, a PSK identity and the secret's ARN; the key itself is read from Secrets Manager at run time.
  # checkov:skip=CKV_AWS_272:Code signing needs an AWS Signer profile outside this module; the zip hash is tracked by source_code_hash.
  count            = local.canary ? 1 : 0
  function_name    = "${var.name}-canary"
  description      = "coapgw: CoAP GET /health over DTLS to every gateway, result as a CloudWatch metric"
  role             = aws_iam_role.canary[0].arn
  filename         = var.canary_zip_path
  source_code_hash = filebase64sha256(var.canary_zip_path)
  handler          = "bootstrap"
  runtime          = "provided.al2023"
  architectures    = ["arm64"]
  memory_size      = 128
  timeout          = 30

  reserved_concurrent_executions = 1

  environment {
    variables = {
      COAPGW_CANARY_TARGETS       = join(",", local.canary_targets)
      COAPGW_CANARY_NAMESPACE     = local.canary_namespace
      COAPGW_CANARY_TIMEOUT       = "5s"
      COAPGW_CANARY_IDENTITY      = local.canary_identity
      COAPGW_FLEET_KEY_SECRET_ARN = var.fleet_key_secret_arn
      COAPGW_COAPS_PORT           = tostring(var.coaps_port)
    }
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.canary[0].name
  }

  tags = local.tags

  depends_on = [aws_iam_role_policy.canary]
}

resource "aws_cloudwatch_event_rule" "canary" {
  count               = local.canary ? 1 : 0
  name                = "${var.name}-canary"
  description         = "Runs the coapgw canary"
  schedule_expression = var.canary_schedule
  tags                = local.tags
}

resource "aws_cloudwatch_event_target" "canary" {
  count = local.canary ? 1 : 0
  rule  = aws_cloudwatch_event_rule.canary[0].name
  arn   = aws_lambda_function.canary[0].arn
}

resource "aws_lambda_permission" "canary" {
  count         = local.canary ? 1 : 0
  statement_id  = "AllowEventBridge"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.canary[0].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.canary[0].arn
}
