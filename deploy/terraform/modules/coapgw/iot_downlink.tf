# Downlink from AWS IoT (iot_downlink = true; docs/downlink.md): the gateways connect to the
# account's IoT data endpoint over MQTT (port 443 with ALPN x-amzn-mqtt-ca, so the HTTPS egress
# rule covers it) with their own X.509 certificate, and subscribe to the classic shadows' delta
# and delete topics (and documents with iot_downlink_documents); a device's first request calls
# GetThingShadow once.
#
#   certificate  one for the gateways, created by AWS IoT (aws_iot_certificate); its private key
#                goes to an SSM SecureString parameter, which only the gateway role may read; at
#                boot cloud-init fetches it into a root-only file that systemd hands to the
#                service (LoadCredential), never into user data or the environment. The key is
#                also in the Terraform state (a sensitive attribute): keep the state encrypted.
#   IoT policy   iot:Connect as ${var.name}-gw-<instance id> (each gateway's client id, so no
#                two collide), iot:Subscribe on exactly the topic filters it uses, iot:Receive
#                on their topics (classic shadows only; named shadows such as coapgw's
#                bookkeeping shadow do not match), nothing else: no publish, no shadow writes.
#   IAM          the gateway role gets iot:GetThingShadow on things and ssm:GetParameter on the
#                key's parameter.

locals {
  iot_downlink_client_prefix = "${var.name}-gw-"
  iot_downlink_arn           = "${local.arn_prefix}:iot:${local.region}:${local.account_id}"

  # Merged into the gateways' environment (gateways.tf); the key file and the client id are set
  # at boot by the drop-in coapgw-iot-downlink writes.
  iot_downlink_env = var.iot_downlink ? {
    COAPGW_IOT_DOWNLINK_ENDPOINT  = "${data.aws_iot_endpoint.data.endpoint_address}:443"
    COAPGW_IOT_DOWNLINK_CERT_FILE = "/etc/coapgw/iot/cert.pem"
    COAPGW_IOT_DOWNLINK_DOCUMENTS = tostring(var.iot_downlink_documents)
  } : {}

  # For the cloud-init template (gateways.tf): empty strings when off.
  iot_downlink_boot = {
    enabled       = var.iot_downlink
    parameter     = var.iot_downlink ? aws_ssm_parameter.iot_downlink_key[0].name : ""
    certificate   = var.iot_downlink ? aws_iot_certificate.gateway[0].certificate_pem : ""
    client_prefix = local.iot_downlink_client_prefix
  }
}

resource "aws_iot_certificate" "gateway" {
  count  = var.iot_downlink ? 1 : 0
  active = true
}

resource "aws_ssm_parameter" "iot_downlink_key" {
  # checkov:skip=CKV_AWS_337:Encrypted with the account's aws/ssm key, which SSM uses for the gateway role's GetParameter without a KMS grant; only that role may read the parameter.
  count       = var.iot_downlink ? 1 : 0
  name        = "/${var.name}/gateway/iot-private-key"
  description = "Private key of the coapgw gateways' AWS IoT certificate (downlink)"
  type        = "SecureString"
  value       = aws_iot_certificate.gateway[0].private_key
  tags        = local.tags
}

data "aws_iam_policy_document" "iot_downlink" {
  statement {
    sid       = "ConnectAsAGateway"
    effect    = "Allow"
    actions   = ["iot:Connect"]
    resources = ["${local.iot_downlink_arn}:client/${local.iot_downlink_client_prefix}*"]
  }

  # Exactly internal/awsdownlink.Topics.
  statement {
    sid     = "SubscribeShadowDeltas"
    effect  = "Allow"
    actions = ["iot:Subscribe"]
    resources = concat([
      "${local.iot_downlink_arn}:topicfilter/$aws/things/+/shadow/update/delta",
      "${local.iot_downlink_arn}:topicfilter/$aws/things/+/shadow/delete/accepted",
      ], var.iot_downlink_documents ? [
      "${local.iot_downlink_arn}:topicfilter/$aws/things/+/shadow/update/documents",
    ] : [])
  }

  # A topic name in a policy takes * for the thing, where the filter has +.
  statement {
    sid     = "ReceiveShadowDeltas"
    effect  = "Allow"
    actions = ["iot:Receive"]
    resources = concat([
      "${local.iot_downlink_arn}:topic/$aws/things/*/shadow/update/delta",
      "${local.iot_downlink_arn}:topic/$aws/things/*/shadow/delete/accepted",
      ], var.iot_downlink_documents ? [
      "${local.iot_downlink_arn}:topic/$aws/things/*/shadow/update/documents",
    ] : [])
  }
}

resource "aws_iot_policy" "gateway" {
  count  = var.iot_downlink ? 1 : 0
  name   = "${var.name}-gateway-downlink"
  policy = data.aws_iam_policy_document.iot_downlink.json
  tags   = local.tags
}

resource "aws_iot_policy_attachment" "gateway" {
  count  = var.iot_downlink ? 1 : 0
  policy = aws_iot_policy.gateway[0].name
  target = aws_iot_certificate.gateway[0].arn
}

data "aws_iam_policy_document" "gateway_iot_downlink" {
  statement {
    sid       = "FirstContactShadow"
    effect    = "Allow"
    actions   = ["iot:GetThingShadow"]
    resources = [local.iot_thing_arn]
  }

  statement {
    sid       = "ReadIoTKey"
    effect    = "Allow"
    actions   = ["ssm:GetParameter"]
    resources = ["${local.arn_prefix}:ssm:${local.region}:${local.account_id}:parameter/${var.name}/gateway/iot-private-key"]
  }

}

resource "aws_iam_role_policy" "gateway_iot_downlink" {
  count  = var.iot_downlink ? 1 : 0
  name   = "${var.name}-gateway-iot-downlink"
  role   = aws_iam_role.gateway.id
  policy = data.aws_iam_policy_document.gateway_iot_downlink.json
}
