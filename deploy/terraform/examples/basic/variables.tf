variable "region" {
  description = "AWS region to deploy to."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name prefix of every resource."
  type        = string
  default     = "coapgw"
}

variable "exposure" {
  description = "\"eip\" (an Elastic IP per gateway) or \"nlb\" (a UDP Network Load Balancer)."
  type        = string
  default     = "eip"
}

variable "binary_s3_uri" {
  description = "s3://bucket/key of the coapgw linux/arm64 binary."
  type        = string
}

variable "binary_sha256" {
  description = "SHA-256 (hex) of that binary."
  type        = string
}

variable "fleet_key_secret_arn" {
  description = "Full ARN of the Secrets Manager secret holding the fleet master key (32 random bytes)."
  type        = string
}

variable "allow_plain_coap" {
  description = "Also open unauthenticated plain CoAP on UDP 5683 (for a fleet migrating to DTLS)."
  type        = bool
  default     = false
}

variable "publish_topic" {
  description = "Optional MQTT topic for every record, e.g. coapgw/{type}/{thing}."
  type        = string
  default     = ""
}

variable "alarm_email" {
  description = "Optional e-mail address for alarm notifications."
  type        = string
  default     = ""
}
