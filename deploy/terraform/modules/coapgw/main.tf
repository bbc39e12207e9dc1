data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

# The account's AWS IoT data endpoint, passed to the Lambda so that it never needs
# iot:DescribeEndpoint (an action that only accepts Resource "*").
data "aws_iot_endpoint" "data" {
  endpoint_type = "iot:Data-ATS"
}

data "aws_subnet" "gateway" {
  for_each = toset(var.subnet_ids)
  id       = each.value
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  arn_prefix = "arn:${local.partition}"

  gateway_azs = distinct([for s in data.aws_subnet.gateway : s.availability_zone])

  # AWS IoT resource ARNs the processor may touch. Thing and thing-type names come from the
  # device path (/{type}/{id}), so the resource is every thing / thing type in this account
  # and region: never "*", and never another resource kind.
  iot_thing_arn     = "${local.arn_prefix}:iot:${local.region}:${local.account_id}:thing/*"
  iot_thingtype_arn = "${local.arn_prefix}:iot:${local.region}:${local.account_id}:thingtype/*"
  # {type} and {thing} placeholders in the topic become one-level wildcards in the ARN.
  iot_topic_arn = var.publish_topic == "" ? "" : "${local.arn_prefix}:iot:${local.region}:${local.account_id}:topic/${replace(replace(var.publish_topic, "{type}", "*"), "{thing}", "*")}"

  use_nlb = var.exposure == "nlb"
  use_eip = var.exposure == "eip"

  tags = merge(var.tags, { "coapgw:deployment" = var.name })
}
