# Least privilege, and no wildcard actions anywhere (internal/deploycheck asserts it):
#   gateways:  sqs:SendMessage on the queue; the binary object; their EIP association; SSM;
#              completing their group's termination lifecycle action (after the spool drain);
#              the CloudWatch agent's writes to the gateway metrics log group;
#              the fleet key secret (and its CMK, through Secrets Manager only, if one is given).
#   processor: consume the queue; thing types, things, shadows (and the topic if set); its logs.
#   canary:    cloudwatch:PutMetricData, restricted by namespace; its logs; the fleet key secret
#              (and CMK), from which it derives its own DTLS key.

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    sid     = "LambdaAssume"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

# The fleet key: secretsmanager:GetSecretValue on exactly var.fleet_key_secret_arn (a full ARN,
# validated: no wildcard), and kms:Decrypt on the given CMK only when Secrets Manager asks for it.
locals {
  fleet_key_kms_key_arns = var.fleet_key_kms_key_arn == "" ? [] : [var.fleet_key_kms_key_arn]
  secretsmanager_service = "secretsmanager.${local.region}.amazonaws.com"
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    sid     = "EC2Assume"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# ---------------------------------------------------------------------------------------------
# Processor Lambda
# ---------------------------------------------------------------------------------------------

resource "aws_iam_role" "processor" {
  name               = "${var.name}-processor"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "processor" {
  statement {
    sid    = "ConsumeQueue"
    effect = "Allow"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.main.arn]
  }

  statement {
    sid       = "ThingTypes"
    effect    = "Allow"
    actions   = ["iot:CreateThingType", "iot:DescribeThingType"]
    resources = [local.iot_thingtype_arn]
  }

  statement {
    sid       = "Things"
    effect    = "Allow"
    actions   = ["iot:CreateThing", "iot:DescribeThing"]
    resources = [local.iot_thing_arn]
  }

  statement {
    sid       = "Shadows"
    effect    = "Allow"
    actions   = ["iot:UpdateThingShadow", "iot:GetThingShadow"]
    resources = [local.iot_thing_arn]
  }

  # iot:Publish only when a topic is configured, and only on that topic.
  dynamic "statement" {
    for_each = var.publish_topic == "" ? [] : [local.iot_topic_arn]
    content {
      sid       = "PublishTopic"
      effect    = "Allow"
      actions   = ["iot:Publish"]
      resources = [statement.value]
    }
  }

  statement {
    sid       = "OwnLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.processor.arn}:*"]
  }
}

resource "aws_iam_role_policy" "processor" {
  name   = "${var.name}-processor"
  role   = aws_iam_role.processor.id
  policy = data.aws_iam_policy_document.processor.json
}

# ---------------------------------------------------------------------------------------------
# Gateways (EC2 instance profile; no access keys anywhere)
# ---------------------------------------------------------------------------------------------

resource "aws_iam_role" "gateway" {
  name               = "${var.name}-gateway"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = local.tags
}

locals {
  binary_s3_bucket = var.binary_s3_uri == "" ? "" : split("/", trimprefix(var.binary_s3_uri, "s3://"))[0]
  binary_s3_key    = var.binary_s3_uri == "" ? "" : join("/", slice(split("/", trimprefix(var.binary_s3_uri, "s3://")), 1, length(split("/", trimprefix(var.binary_s3_uri, "s3://")))))
}

data "aws_iam_policy_document" "gateway" {
  statement {
    sid       = "ForwardToQueue"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.main.arn]
  }

  statement {
    sid       = "ReadFleetKey"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.fleet_key_secret_arn]
  }

  # The CloudWatch agent puts the gateway's EMF metric documents into their log group only.
  statement {
    sid       = "GatewayMetricsLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.gateway_metrics.arn}:*"]
  }

  # coapgw-lifecycle ends its own Terminating:Wait once the spool is drained (gateways.tf).
  statement {
    sid       = "CompleteOwnTermination"
    effect    = "Allow"
    actions   = ["autoscaling:CompleteLifecycleAction"]
    resources = [aws_autoscaling_group.gateway.arn]
  }

  dynamic "statement" {
    for_each = local.fleet_key_kms_key_arns
    content {
      sid       = "DecryptFleetKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = [local.secretsmanager_service]
      }
    }
  }

  dynamic "statement" {
    for_each = var.binary_s3_uri == "" ? [] : ["${local.arn_prefix}:s3:::${local.binary_s3_bucket}/${local.binary_s3_key}"]
    content {
      sid       = "FetchBinary"
      effect    = "Allow"
      actions   = ["s3:GetObject"]
      resources = [statement.value]
    }
  }

  # exposure = "eip": an instance claims one of the module's Elastic IPs at boot, for itself only.
  dynamic "statement" {
    for_each = local.use_eip ? [1] : []
    content {
      sid     = "ClaimElasticIP"
      effect  = "Allow"
      actions = ["ec2:AssociateAddress"]
      resources = concat(
        [for e in aws_eip.gateway : "${local.arn_prefix}:ec2:${local.region}:${local.account_id}:elastic-ip/${e.allocation_id}"],
        ["${local.arn_prefix}:ec2:${local.region}:${local.account_id}:network-interface/*"],
      )
    }
  }

  dynamic "statement" {
    for_each = local.use_eip ? [1] : []
    content {
      sid       = "ClaimElasticIPOwnInstance"
      effect    = "Allow"
      actions   = ["ec2:AssociateAddress"]
      resources = ["${local.arn_prefix}:ec2:${local.region}:${local.account_id}:instance/*"]
      condition {
        test     = "StringEquals"
        variable = "aws:ResourceTag/coapgw:deployment"
        values   = [var.name]
      }
    }
  }
}

resource "aws_iam_role_policy" "gateway" {
  name   = "${var.name}-gateway"
  role   = aws_iam_role.gateway.id
  policy = data.aws_iam_policy_document.gateway.json
}

# SSM Session Manager instead of SSH.
resource "aws_iam_role_policy_attachment" "gateway_ssm" {
  role       = aws_iam_role.gateway.name
  policy_arn = "${local.arn_prefix}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "gateway" {
  name = "${var.name}-gateway"
  role = aws_iam_role.gateway.name
  tags = local.tags
}

# ---------------------------------------------------------------------------------------------
# Canary Lambda
# ---------------------------------------------------------------------------------------------

resource "aws_iam_role" "canary" {
  count              = local.canary ? 1 : 0
  name               = "${var.name}-canary"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "canary" {
  count = local.canary ? 1 : 0

  # PutMetricData has no resource ARNs; the namespace condition confines it.
  statement {
    sid       = "CanaryMetrics"
    effect    = "Allow"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [local.canary_namespace]
    }
  }

  statement {
    sid       = "OwnLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.canary[0].arn}:*"]
  }

  # The canary derives its own PSK (identity local.canary_identity) from the fleet key.
  statement {
    sid       = "ReadFleetKey"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.fleet_key_secret_arn]
  }

  dynamic "statement" {
    for_each = local.fleet_key_kms_key_arns
    content {
      sid       = "DecryptFleetKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = [local.secretsmanager_service]
      }
    }
  }
}

resource "aws_iam_role_policy" "canary" {
  count  = local.canary ? 1 : 0
  name   = "${var.name}-canary"
  role   = aws_iam_role.canary[0].id
  policy = data.aws_iam_policy_document.canary[0].json
}
