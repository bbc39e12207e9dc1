# An example AWS IoT rule (off by default: iot_rule_example) so that telemetry flows on from the
# shadows coapgw writes: every accepted update of a thing's classic shadow goes, as
# {"thing":…,"reported":{…},"version":…,"at":<ms>}, to the CloudWatch Logs group
# /aws/iot/<name>-telemetry. coapgw's own registry shadow ("coapgw", a named shadow) has another
# topic ($aws/things/<thing>/shadow/name/coapgw/update/accepted) and is not matched.
#
# Cost: the rule runs once per shadow update (AWS IoT rules: $0.15 per million rules triggered
# plus $0.15 per million actions, us-east-1), and CloudWatch Logs ingestion ($0.50/GB). Replace
# the action with S3, Kinesis Firehose or Timestream for anything beyond a look.

locals {
  iot_rule_name = "${replace(var.name, "-", "_")}_telemetry"
}

resource "aws_cloudwatch_log_group" "iot_rule" {
  # checkov:skip=CKV_AWS_158:Example telemetry log; the CloudWatch Logs default encryption applies.
  count             = var.iot_rule_example ? 1 : 0
  name              = "/aws/iot/${var.name}-telemetry"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

data "aws_iam_policy_document" "iot_rule_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["iot.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "iot_rule" {
  count              = var.iot_rule_example ? 1 : 0
  name               = "${var.name}-iot-rule"
  assume_role_policy = data.aws_iam_policy_document.iot_rule_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "iot_rule" {
  count = var.iot_rule_example ? 1 : 0
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.iot_rule[0].arn}:*"]
  }
}

resource "aws_iam_role_policy" "iot_rule" {
  count  = var.iot_rule_example ? 1 : 0
  name   = "${var.name}-iot-rule"
  role   = aws_iam_role.iot_rule[0].id
  policy = data.aws_iam_policy_document.iot_rule[0].json
}

resource "aws_iot_topic_rule" "telemetry" {
  count       = var.iot_rule_example ? 1 : 0
  name        = local.iot_rule_name
  description = "coapgw example: shadow updates to CloudWatch Logs"
  enabled     = true
  sql         = "SELECT topic(3) AS thing, state.reported AS reported, version, timestamp() AS at FROM '$aws/things/+/shadow/update/accepted'"
  sql_version = "2016-03-23"

  cloudwatch_logs {
    log_group_name = aws_cloudwatch_log_group.iot_rule[0].name
    role_arn       = aws_iam_role.iot_rule[0].arn
  }

  error_action {
    cloudwatch_logs {
      log_group_name = aws_cloudwatch_log_group.iot_rule[0].name
      role_arn       = aws_iam_role.iot_rule[0].arn
    }
  }

  tags = local.tags

  depends_on = [aws_iam_role_policy.iot_rule]
}
