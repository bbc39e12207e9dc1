# A deliberately insecure configuration: every rule of terraform_test.go is broken at least once.
# It is never deployed (and checkov does not scan internal/).

data "aws_iam_policy_document" "bad" {
  statement {
    actions   = ["iot:*"]
    resources = ["*"]
  }

  statement {
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.bad.arn]
  }

  statement {
    actions   = ["sqs:SendMessage"]
    resources = ["arn:aws:sqs:eu-west-1:123456789012:other"]
  }

  statement {
    actions   = ["iot:UpdateThingShadow", "iot:DeleteThing"]
    resources = ["arn:aws:iot:eu-west-1:123456789012:thingtype/x"]
  }

  dynamic "statement" {
    for_each = [1]
    content {
      not_actions = ["iam:PassRole"]
      resources   = ["*"]
    }
  }

  statement {
    actions   = ["autoscaling:CompleteLifecycleAction"]
    resources = ["*"]
  }

  statement {
    actions   = ["logs:PutLogEvents"]
    resources = ["arn:aws:logs:eu-west-1:123456789012:log-group:other:*"]
  }
}

# Scale-in would delete its instances' spools without a drain.
resource "aws_autoscaling_group" "unhooked" {
  max_size = 2
  min_size = 1
}

resource "aws_iam_role_policy" "inline_json" {
  role = "r"
  policy = jsonencode({
    Statement = [{ Effect = "Allow", Action = "*", Resource = "*" }]
  })
}

resource "aws_iam_role_policy_attachment" "admin" {
  role       = "r"
  policy_arn = "arn:aws:iam::aws:policy/AdministratorAccess"
}

resource "aws_iam_access_key" "ci" {
  user = "ci"
}

resource "aws_launch_template" "optional" {
  metadata_options {
    http_tokens = "optional"
  }
}

resource "aws_instance" "none" {
  ami = "ami-123"
}

resource "aws_sqs_queue" "dlq" {
  sqs_managed_sse_enabled = true
}

resource "aws_sqs_queue" "bad" {
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = 10
  })
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  security_group_id = "sg-1"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = "10.0.0.0/8"
}

resource "aws_security_group" "metrics_open" {
  ingress {
    protocol    = "tcp"
    from_port   = 8080
    to_port     = 8080
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# DTLS: plain CoAP open by default, the fleet key readable too widely.

variable "exposure" {
  default = "eip"
}

variable "allow_plain_coap" {
  default = true
}

variable "fleet_key_secret_arn" {
  default = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:coapgw/fleet-key-AbCdEf"

  validation {
    condition     = startswith(var.fleet_key_secret_arn, "arn:aws:secretsmanager:")
    error_message = "not a Secrets Manager ARN"
  }
}

data "aws_iam_policy_document" "gateway" {
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = ["arn:aws:secretsmanager:eu-west-1:123456789012:secret:*"]
  }

  statement {
    actions   = ["secretsmanager:ListSecrets"]
    resources = [var.fleet_key_secret_arn]
  }

  statement {
    actions   = ["kms:Decrypt"]
    resources = ["*"]
  }
}

resource "aws_vpc_security_group_ingress_rule" "coap_always" {
  for_each          = toset(["0.0.0.0/0"])
  security_group_id = "sg-1"
  ip_protocol       = "udp"
  from_port         = 5683
  to_port           = 5683
  cidr_ipv4         = each.value
}

resource "aws_lb_listener" "coap_always" {
  count    = var.exposure == "nlb" || var.exposure == "eip" ? 1 : 0
  port     = 5683
  protocol = "UDP"
}

resource "aws_lb_target_group" "coap_unknown" {
  count    = data.aws_region.current.name == "eu-west-1" ? 1 : 0
  port     = 5683
  protocol = "UDP"
}
