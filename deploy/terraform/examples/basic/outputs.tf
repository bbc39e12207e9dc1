output "gateway_addresses" {
  description = "Point devices here (UDP 5683)."
  value       = module.coapgw.gateway_addresses
}

output "queue_url" {
  description = "The SQS queue between gateways and processor."
  value       = module.coapgw.queue_url
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms."
  value       = module.coapgw.alarm_topic_arn
}
