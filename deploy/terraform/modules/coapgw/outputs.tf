output "queue_url" {
  description = "URL of the SQS queue the gateways forward to (COAPGW_QUEUE; `coapgw process --queue` for an EC2 worker instead of the Lambda)."
  value       = aws_sqs_queue.main.url
}

output "queue_arn" {
  description = "ARN of the SQS queue."
  value       = aws_sqs_queue.main.arn
}

output "dlq_url" {
  description = "URL of the dead-letter queue (records that failed 5 receives)."
  value       = aws_sqs_queue.dlq.url
}

output "processor_function_name" {
  description = "Name of the processor Lambda."
  value       = aws_lambda_function.processor.function_name
}

output "gateway_addresses" {
  description = "Where devices send CoAP over DTLS (UDP coaps_port): the Elastic IPs, one per gateway_count, each held by a running gateway (exposure = \"eip\"), or the NLB's DNS name (\"nlb\")."
  value       = local.use_nlb ? [aws_lb.coap[0].dns_name] : [for e in aws_eip.gateway : e.public_ip]
}

output "coaps_port" {
  description = "UDP port of CoAP over DTLS on the gateway addresses."
  value       = var.coaps_port
}

output "plain_coap_open" {
  description = "Whether plain, unauthenticated CoAP on UDP 5683 is open (allow_plain_coap)."
  value       = var.allow_plain_coap
}

output "canary_identity" {
  description = "PSK identity of the canary (its key is derived from the fleet key); empty without a canary."
  value       = local.canary ? local.canary_identity : ""
}

output "gateway_autoscaling_group" {
  description = "Name of the gateways' Auto Scaling group."
  value       = aws_autoscaling_group.gateway.name
}

output "gateway_role_arn" {
  description = "ARN of the gateways' instance role."
  value       = aws_iam_role.gateway.arn
}

output "gateway_security_group_id" {
  description = "Security group of the gateways (add rules for your own monitoring)."
  value       = aws_security_group.gateway.id
}

output "alarm_topic_arn" {
  description = "SNS topic every alarm notifies; subscribe pagers or chat here."
  value       = aws_sns_topic.alarms.arn
}

output "iot_data_endpoint" {
  description = "The account's AWS IoT data endpoint (iot:Data-ATS) the processor uses."
  value       = data.aws_iot_endpoint.data.endpoint_address
}

output "iot_downlink_certificate_arn" {
  description = "ARN of the gateways' AWS IoT certificate (iot_downlink), empty when off."
  value       = var.iot_downlink ? aws_iot_certificate.gateway[0].arn : ""
}
