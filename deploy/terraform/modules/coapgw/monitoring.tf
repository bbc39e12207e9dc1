# Gateway metrics: every gateway writes its stage lag, spool depth and bytes as CloudWatch
# embedded metric format (EMF) every minute (coapgw --emf-interval) to the CloudWatch agent on
# the instance (installed by cloud-init, listening on 127.0.0.1:25888), which puts them into the
# log group below; CloudWatch Logs turns them into metrics in local.metrics_namespace, per
# GatewayId and over all gateways. The canary and the gateways share that namespace.
#
# Why EMF through the agent rather than PutMetricData from the gateway or the agent scraping
# /metrics: the gateway then needs no CloudWatch permission and makes no AWS call for metrics
# (the agent batches them), the same lines work unchanged with any log shipper (containers'
# awslogs driver: --emf-addr empty writes them to stderr), and the agent's Prometheus scraping
# would need a metric declaration per series. The log group holds one small line per gateway
# per minute.

locals {
  metrics_namespace = "coapgw/${var.name}"
}

resource "aws_cloudwatch_log_group" "gateway_metrics" {
  # checkov:skip=CKV_AWS_158:The group holds the gateways' EMF metric documents only (lag, spool depth); the CloudWatch Logs default encryption applies.
  name              = "/coapgw/${var.name}/gateway-metrics"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

# Records the processor sets aside (a payload it cannot apply, a shadow over 8 KB, ...) are
# logged once per batch as "records set aside" (internal/processor); each such line counts one.
resource "aws_cloudwatch_log_metric_filter" "set_aside" {
  name           = "${var.name}-records-set-aside"
  log_group_name = aws_cloudwatch_log_group.processor.name
  pattern        = "\"records set aside\""

  metric_transformation {
    name          = "ProcessorSetAsideBatches"
    namespace     = local.metrics_namespace
    value         = "1"
    default_value = "0"
    unit          = "Count"
  }
}
