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
}

run "eip_mode" {
  command = plan

  assert {
    condition     = length(aws_eip.gateway) == 3 && length(aws_lb.coap) == 0
    error_message = "exposure = eip: one EIP per possible instance (max 3), no NLB"
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
    condition     = length(aws_eip.gateway) == 0 && aws_lb_listener.coap[0].protocol == "UDP" && aws_lb_listener.coaps[0].port == 5684
    error_message = "exposure = nlb: UDP listeners on 5683 and 5684, no EIPs"
  }
  assert {
    condition     = aws_lb_target_group.coap[0].health_check[0].protocol == "TCP" && aws_lb_target_group.coap[0].health_check[0].port == "8080"
    error_message = "NLB health check: TCP on the HTTP port"
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
