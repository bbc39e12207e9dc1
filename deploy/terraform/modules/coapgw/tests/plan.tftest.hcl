# Plans the module against a mocked AWS provider (OpenTofu >= 1.8 / Terraform >= 1.7): no
# credentials or network needed. Run by scripts/deploy-checks.sh (validate step), which
# provides placeholder Lambda zips at ../../../../bin/lambda.

mock_provider "aws" {
  mock_data "aws_vpc" {
    defaults = { cidr_block = "10.0.0.0/16" }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_resource "aws_sns_topic" {
    defaults = { arn = "arn:aws:sns:eu-west-1:123456789012:coapgw-alarms" }
  }
  mock_resource "aws_sqs_queue" {
    defaults = { arn = "arn:aws:sqs:eu-west-1:123456789012:coapgw" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/coapgw" }
  }
  mock_resource "aws_iam_instance_profile" {
    defaults = { arn = "arn:aws:iam::123456789012:instance-profile/coapgw" }
  }
  mock_resource "aws_lambda_function" {
    defaults = { arn = "arn:aws:lambda:eu-west-1:123456789012:function:coapgw" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:coapgw" }
  }
  mock_resource "aws_cloudwatch_event_rule" {
    defaults = { arn = "arn:aws:events:eu-west-1:123456789012:rule/coapgw" }
  }
  mock_resource "aws_launch_template" {
    defaults = { id = "lt-0123456789abcdef0", latest_version = 1 }
  }
  mock_resource "aws_lb" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/coapgw/0123456789abcdef" }
  }
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/coapgw/0123456789abcdef" }
  }
}

variables {
  vpc_id          = "vpc-12345678"
  subnet_ids      = ["subnet-aaaa1111", "subnet-bbbb2222"]
  lambda_zip_path = "../../../../bin/lambda/coapgw-lambda.zip"
  canary_zip_path = "../../../../bin/lambda/coapgw-canary.zip"
  binary_s3_uri   = "s3://artifacts-bucket/coapgw/coapgw-linux-arm64"
  binary_sha256   = "0000000000000000000000000000000000000000000000000000000000000000"

  fleet_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:coapgw/fleet-key-AbCdEf"
}

run "eip_mode" {
  command = plan

  assert {
    condition     = length(aws_eip.gateway) == var.gateway_count && length(aws_lb.coap) == 0
    error_message = "exposure = eip: one EIP per gateway (gateway_count, not gateway_max_count), no NLB"
  }
  assert {
    condition     = length(local.canary_targets) == var.gateway_count
    error_message = "the canary probes one address per gateway, none that no instance holds"
  }
  assert {
    condition     = one(aws_autoscaling_group.gateway.initial_lifecycle_hook).lifecycle_transition == "autoscaling:EC2_INSTANCE_TERMINATING" && one(aws_autoscaling_group.gateway.initial_lifecycle_hook).heartbeat_timeout == 900
    error_message = "a termination lifecycle hook must hold terminating gateways while their spool drains"
  }
  assert {
    condition     = strcontains(local.user_data, "coapgw-gateway-id") && strcontains(local.user_data, "meta-data/instance-id") && strcontains(local.user_data, "coapgw-lifecycle.service") && strcontains(local.user_data, "COAPGW_LIFECYCLE_HOOK=coapgw-drain") && strcontains(local.user_data, "COAPGW_ASG_NAME=coapgw-gateway")
    error_message = "cloud-init must set the gateway id from the instance id and install the lifecycle drain"
  }
  assert {
    condition     = strcontains(local.user_data, "COAPGW_EMF_INTERVAL=60s") && strcontains(local.user_data, "COAPGW_EMF_ADDR=tcp://127.0.0.1:25888") && strcontains(local.user_data, "COAPGW_EMF_NAMESPACE=coapgw/coapgw") && strcontains(local.user_data, "amazon-cloudwatch-agent") && strcontains(local.user_data, "\"emf\": {}")
    error_message = "the gateways must send their lag and spool depth as EMF to the CloudWatch agent, which cloud-init installs with its EMF listener"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.gateway_lag.metric_name == "StageLagSeconds" && aws_cloudwatch_metric_alarm.gateway_lag.namespace == "coapgw/coapgw" && aws_cloudwatch_metric_alarm.gateway_lag.threshold == 300
    error_message = "an alarm on the gateways' lag"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.ingest_stopped[0].metric_name == "NumberOfMessagesSent" && aws_cloudwatch_metric_alarm.ingest_stopped[0].evaluation_periods == 15 && aws_cloudwatch_metric_alarm.ingest_stopped[0].comparison_operator == "LessThanThreshold" && aws_cloudwatch_metric_alarm.ingest_stopped[0].treat_missing_data == "breaching"
    error_message = "an alarm when nothing reaches the queue for 15 minutes"
  }
  assert {
    condition     = aws_cloudwatch_log_metric_filter.set_aside.pattern == "\"records set aside\"" && aws_cloudwatch_metric_alarm.set_aside.metric_name == "ProcessorSetAsideBatches" && aws_cloudwatch_metric_alarm.set_aside.namespace == local.canary_namespace
    error_message = "an alarm on records the processor sets aside"
  }
  assert {
    condition     = aws_sqs_queue.main.visibility_timeout_seconds == 6 * var.lambda_timeout_seconds
    error_message = "visibility timeout must be 6x the Lambda timeout"
  }
  assert {
    condition     = jsondecode(aws_sqs_queue.main.redrive_policy).maxReceiveCount == 5
    error_message = "redrive maxReceiveCount must be 5"
  }
  assert {
    condition     = aws_launch_template.gateway.metadata_options[0].http_tokens == "required"
    error_message = "IMDSv2 must be required"
  }
  assert {
    condition     = alltrue([for b in aws_launch_template.gateway.block_device_mappings : b.ebs[0].encrypted == "true"])
    error_message = "every gateway volume must be encrypted"
  }
  assert {
    condition     = aws_autoscaling_group.gateway.health_check_type == "EC2" && aws_autoscaling_group.gateway.min_size == 2
    error_message = "eip mode: EC2 health checks, two gateways"
  }
  assert {
    condition     = strcontains(local.user_data, "aws s3 cp --region eu-west-1 --only-show-errors 's3://artifacts-bucket/coapgw/coapgw-linux-arm64'")
    error_message = "cloud-init must fetch the binary from the S3 object"
  }
  assert {
    condition     = local.iot_topic_arn == ""
    error_message = "no publish topic: no topic ARN"
  }

  # DTLS only by default: 5684 open to the devices, 5683 closed, the gateways told so.
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.coap) == 0
    error_message = "plain CoAP (5683) must be closed by default"
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.coaps) == 1 && aws_vpc_security_group_ingress_rule.coaps["0.0.0.0/0"].from_port == 5684 && aws_vpc_security_group_ingress_rule.coaps["0.0.0.0/0"].to_port == 5684 && aws_vpc_security_group_ingress_rule.coaps["0.0.0.0/0"].ip_protocol == "udp"
    error_message = "DTLS (udp 5684) must be open to device_cidrs"
  }
  assert {
    condition     = strcontains(local.user_data, "COAPGW_PLAIN_COAP=off") && strcontains(local.user_data, "COAPGW_COAPS_ADDR=:5684") && strcontains(local.user_data, "COAPGW_FLEET_KEY_SECRET_ARN=arn:aws:secretsmanager:eu-west-1:123456789012:secret:coapgw/fleet-key-AbCdEf") && strcontains(local.user_data, "COAPGW_DTLS_STATE_FILE=/var/lib/coapgw/dtls-sessions")
    error_message = "gateway environment: DTLS on :5684, plain CoAP off, the fleet key's ARN, sessions kept on the spool volume across restarts"
  }
  assert {
    condition     = strcontains(local.user_data, "net.core.rmem_max = 8388608") && strcontains(local.user_data, "[sysctl, --system]")
    error_message = "cloud-init must raise net.core.rmem_max to the gateway's 8 MiB socket buffers (the unit grants no CAP_NET_ADMIN)"
  }

  # The fleet key: readable by the gateways and the canary, that secret only; no KMS grant
  # without a CMK.
  assert {
    condition     = toset(flatten([for st in data.aws_iam_policy_document.gateway.statement : st.resources if contains(st.actions, "secretsmanager:GetSecretValue")])) == toset([var.fleet_key_secret_arn])
    error_message = "gateway role: secretsmanager:GetSecretValue on exactly the fleet key secret"
  }
  assert {
    condition     = toset(flatten([for st in data.aws_iam_policy_document.canary[0].statement : st.resources if contains(st.actions, "secretsmanager:GetSecretValue")])) == toset([var.fleet_key_secret_arn])
    error_message = "canary role: secretsmanager:GetSecretValue on exactly the fleet key secret"
  }
  assert {
    condition     = length([for st in data.aws_iam_policy_document.gateway.statement : st if contains(st.actions, "kms:Decrypt")]) == 0
    error_message = "no fleet_key_kms_key_arn: no kms:Decrypt"
  }

  # The canary speaks DTLS with its own identity.
  assert {
    condition     = alltrue([for t in split(",", aws_lambda_function.canary[0].environment[0].variables.COAPGW_CANARY_TARGETS) : endswith(t, ":5684")]) && length(split(",", aws_lambda_function.canary[0].environment[0].variables.COAPGW_CANARY_TARGETS)) == var.gateway_count
    error_message = "canary: every EIP on the DTLS port"
  }
  assert {
    condition     = aws_lambda_function.canary[0].environment[0].variables.COAPGW_CANARY_IDENTITY == "canary/coapgw" && aws_lambda_function.canary[0].environment[0].variables.COAPGW_FLEET_KEY_SECRET_ARN == var.fleet_key_secret_arn && aws_lambda_function.canary[0].environment[0].variables.COAPGW_COAPS_PORT == "5684"
    error_message = "canary environment: identity canary/<name>, the fleet key's ARN, the DTLS port"
  }
}

run "nlb_mode_with_topic" {
  command = plan

  variables {
    exposure      = "nlb"
    publish_topic = "coapgw/{type}/{thing}"
    binary_s3_uri = ""
    binary_url    = "https://example.com/coapgw"
  }

  assert {
    condition     = length(aws_eip.gateway) == 0 && aws_lb_listener.coaps[0].protocol == "UDP" && aws_lb_listener.coaps[0].port == 5684 && aws_lb_target_group.coaps[0].port == 5684
    error_message = "exposure = nlb: a UDP listener on 5684, no EIPs"
  }
  assert {
    condition     = length(aws_lb_listener.coap) == 0 && length(aws_lb_target_group.coap) == 0 && length(aws_vpc_security_group_ingress_rule.coap) == 0
    error_message = "exposure = nlb without allow_plain_coap: no listener, target group or ingress rule on 5683"
  }
  assert {
    condition     = length(aws_autoscaling_group.gateway.target_group_arns) == 1
    error_message = "exposure = nlb: the gateways register with the DTLS target group only"
  }
  assert {
    condition     = aws_lb_target_group.coaps[0].health_check[0].protocol == "TCP" && aws_lb_target_group.coaps[0].health_check[0].port == "8080"
    error_message = "NLB health check: TCP on the HTTP port"
  }
  assert {
    condition     = aws_lambda_function.canary[0].environment[0].variables.COAPGW_CANARY_TARGETS == "${aws_lb.coap[0].dns_name}:5684"
    error_message = "canary: the NLB's name on the DTLS port"
  }
  assert {
    condition     = aws_autoscaling_group.gateway.health_check_type == "ELB"
    error_message = "nlb mode: ELB health checks"
  }
  assert {
    condition     = local.iot_topic_arn == "arn:aws:iot:eu-west-1:123456789012:topic/coapgw/*/*"
    error_message = "topic ARN: placeholders become one-level wildcards"
  }
  assert {
    condition     = strcontains(local.user_data, "curl -fsSL --proto '=https' --retry 5 'https://example.com/coapgw' -o")
    error_message = "cloud-init must fetch the binary from the URL"
  }
}

run "nlb_with_plain_coap" {
  command = plan

  variables {
    exposure         = "nlb"
    allow_plain_coap = true
    device_cidrs     = ["198.51.100.0/24", "203.0.113.0/24"]
    coaps_port       = 15684
    canary_identity  = "probe:eu/canary-1"
  }

  # The mocked provider gives every target group the same ARN; tell the two apart.
  override_resource {
    target = aws_lb_target_group.coap
    values = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/coapgw-coap/0123456789abcdef" }
  }

  assert {
    condition     = aws_lb_listener.coap[0].protocol == "UDP" && aws_lb_listener.coap[0].port == 5683 && aws_lb_target_group.coap[0].port == 5683
    error_message = "allow_plain_coap: a UDP listener and target group on 5683"
  }
  assert {
    condition     = aws_lb_listener.coaps[0].port == 15684 && aws_lb_target_group.coaps[0].port == 15684
    error_message = "coaps_port moves the DTLS listener and target group"
  }
  assert {
    condition     = toset(keys(aws_vpc_security_group_ingress_rule.coap)) == toset(var.device_cidrs) && alltrue([for r in aws_vpc_security_group_ingress_rule.coap : r.from_port == 5683 && r.to_port == 5683 && r.ip_protocol == "udp"])
    error_message = "allow_plain_coap: udp 5683 open to each device CIDR, and only to them"
  }
  assert {
    condition     = toset(keys(aws_vpc_security_group_ingress_rule.coaps)) == toset(var.device_cidrs) && alltrue([for r in aws_vpc_security_group_ingress_rule.coaps : r.from_port == 15684 && r.to_port == 15684])
    error_message = "DTLS on coaps_port open to each device CIDR"
  }
  assert {
    condition     = length(aws_autoscaling_group.gateway.target_group_arns) == 2 && contains(aws_autoscaling_group.gateway.target_group_arns, aws_lb_target_group.coap[0].arn)
    error_message = "allow_plain_coap: the gateways register with both target groups"
  }
  assert {
    condition     = strcontains(local.user_data, "COAPGW_PLAIN_COAP=open") && strcontains(local.user_data, "COAPGW_COAPS_ADDR=:15684")
    error_message = "allow_plain_coap: plain CoAP policy open (fleet keys bind every thing, so unbound would refuse all)"
  }
  assert {
    condition     = aws_lambda_function.canary[0].environment[0].variables.COAPGW_CANARY_IDENTITY == "probe:eu/canary-1" && endswith(aws_lambda_function.canary[0].environment[0].variables.COAPGW_CANARY_TARGETS, ":15684")
    error_message = "canary: the configured identity, still over DTLS"
  }
}

run "fleet_key_cmk" {
  command = plan

  variables {
    fleet_key_kms_key_arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
  }

  assert {
    condition     = toset(flatten([for st in data.aws_iam_policy_document.gateway.statement : st.resources if contains(st.actions, "kms:Decrypt")])) == toset([var.fleet_key_kms_key_arn])
    error_message = "gateway role: kms:Decrypt on the fleet key's CMK only"
  }
  assert {
    condition     = toset(flatten([for st in data.aws_iam_policy_document.canary[0].statement : st.resources if contains(st.actions, "kms:Decrypt")])) == toset([var.fleet_key_kms_key_arn])
    error_message = "canary role: kms:Decrypt on the fleet key's CMK only"
  }
  assert {
    condition = alltrue([for c in flatten([for st in data.aws_iam_policy_document.gateway.statement : st.condition if contains(st.actions, "kms:Decrypt")]) :
    c.test == "StringEquals" && c.variable == "kms:ViaService" && tolist(c.values) == tolist(["secretsmanager.eu-west-1.amazonaws.com"])]) && length(flatten([for st in data.aws_iam_policy_document.gateway.statement : st.condition if contains(st.actions, "kms:Decrypt")])) == 1
    error_message = "kms:Decrypt only through Secrets Manager"
  }
}

run "rejects_wildcard_secret" {
  command = plan

  variables {
    fleet_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:*"
  }

  expect_failures = [var.fleet_key_secret_arn]
}

run "rejects_partial_secret_arn" {
  command = plan

  variables {
    fleet_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:coapgw/fleet-key"
  }

  expect_failures = [var.fleet_key_secret_arn]
}

run "rejects_one_gateway" {
  command = plan

  variables {
    gateway_count = 1
  }

  expect_failures = [var.gateway_count]
}

run "rejects_short_retention" {
  command = plan

  variables {
    queue_message_retention_seconds = 86400
  }

  expect_failures = [var.queue_message_retention_seconds]
}

run "iot_downlink" {
  command = plan

  variables {
    iot_downlink = true
  }

  assert {
    condition     = length(aws_iot_certificate.gateway) == 1 && length(aws_iot_policy_attachment.gateway) == 1 && length(aws_iam_role_policy.gateway_iot_downlink) == 1
    error_message = "iot_downlink: a certificate for the gateways, its policy attached, the role's shadow and key access"
  }
  assert {
    condition     = aws_ssm_parameter.iot_downlink_key[0].type == "SecureString"
    error_message = "the gateways' IoT private key must be stored as an SSM SecureString"
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.gateway.user_data), "COAPGW_IOT_DOWNLINK_ENDPOINT=") && strcontains(base64decode(aws_launch_template.gateway.user_data), "/usr/local/sbin/coapgw-iot-downlink")
    error_message = "the gateways' environment and boot must configure the downlink"
  }
  assert {
    condition     = contains([for f in yamldecode(base64decode(aws_launch_template.gateway.user_data)).write_files : f.path], "/etc/coapgw/iot/cert.pem") && contains([for f in yamldecode(base64decode(aws_launch_template.gateway.user_data)).write_files : f.path], "/usr/local/sbin/coapgw-iot-downlink") && contains(yamldecode(base64decode(aws_launch_template.gateway.user_data)).runcmd, ["/usr/local/sbin/coapgw-iot-downlink"])
    error_message = "the cloud-init document must stay valid YAML with the certificate and the key script"
  }
}

run "iot_downlink_off" {
  command = plan

  assert {
    condition     = length(aws_iot_certificate.gateway) == 0 && !strcontains(base64decode(aws_launch_template.gateway.user_data), "IOT_DOWNLINK")
    error_message = "without iot_downlink: no certificate and no downlink settings"
  }
}

run "iot_rule_example" {
  command = plan

  variables {
    iot_rule_example = true
  }

  assert {
    condition     = length(aws_iot_topic_rule.telemetry) == 1 && strcontains(aws_iot_topic_rule.telemetry[0].sql, "FROM '$aws/things/+/shadow/update/accepted'")
    error_message = "iot_rule_example: one rule on the classic shadows' update/accepted topic"
  }
  assert {
    condition     = aws_cloudwatch_log_group.iot_rule[0].name == "/aws/iot/coapgw-telemetry"
    error_message = "iot_rule_example: the rule's log group"
  }
  assert {
    condition     = aws_lambda_function.processor.environment[0].variables["COAPGW_IOT_CONSUMERS"] == "20"
    error_message = "the Lambda paces control-plane calls over the mapping's maximum concurrency"
  }
}

run "no_iot_rule_by_default" {
  command = plan

  assert {
    condition     = length(aws_iot_topic_rule.telemetry) == 0 && length(aws_cloudwatch_log_group.iot_rule) == 0 && length(aws_iam_role.iot_rule) == 0
    error_message = "the example IoT rule is off by default"
  }
}
