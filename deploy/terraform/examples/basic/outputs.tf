output "gateway_addresses" {
  description = "Point devices here: CoAP over DTLS on UDP 5684 (and plain CoAP on 5683 only with allow_plain_coap)."
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
