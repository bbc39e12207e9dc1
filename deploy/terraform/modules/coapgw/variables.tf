# ---------------------------------------------------------------------------------------------
# General
# ---------------------------------------------------------------------------------------------

variable "name" {
  description = "Name prefix for every resource (queue, functions, roles, alarms, gateways)."
  type        = string
  default     = "coapgw"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource that supports them."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------------------------
# Queue (gateway -> SQS -> Lambda)
# ---------------------------------------------------------------------------------------------

variable "queue_message_retention_seconds" {
  description = "How long the queue keeps a record the processor has not applied. At least 4 days so that a weekend-long AWS IoT or processor outage loses nothing; SQS allows up to 14 days."
  type        = number
  default     = 345600 # 4 days

  validation {
    condition     = var.queue_message_retention_seconds >= 345600 && var.queue_message_retention_seconds <= 1209600
    error_message = "queue_message_retention_seconds must be between 345600 (4 days) and 1209600 (14 days)."
  }
}

variable "dlq_message_retention_seconds" {
  description = "How long the dead-letter queue keeps records that failed 5 receives (for inspection and redrive)."
  type        = number
  default     = 1209600 # 14 days, the SQS maximum

  validation {
    condition     = var.dlq_message_retention_seconds >= 60 && var.dlq_message_retention_seconds <= 1209600
    error_message = "dlq_message_retention_seconds must be between 60 and 1209600."
  }
}

# ---------------------------------------------------------------------------------------------
# Processor Lambda
# ---------------------------------------------------------------------------------------------

variable "lambda_zip_path" {
  description = "Path of the processor's deployment package (bootstrap in a zip), built by `make lambda-zip` (bin/lambda/coapgw-lambda.zip)."
  type        = string

  validation {
    condition     = endswith(var.lambda_zip_path, ".zip")
    error_message = "lambda_zip_path must name a .zip file."
  }
}

variable "lambda_memory_mb" {
  description = "Memory of the processor Lambda in MB (CPU scales with it). 256 MB is ample for the Go handler."
  type        = number
  default     = 256

  validation {
    condition     = var.lambda_memory_mb >= 128 && var.lambda_memory_mb <= 10240
    error_message = "lambda_memory_mb must be between 128 and 10240."
  }
}

variable "lambda_timeout_seconds" {
  description = "Timeout of the processor Lambda. The queue's visibility timeout is set to 6x this (the AWS recommendation for SQS event sources)."
  type        = number
  default     = 60

  validation {
    condition     = var.lambda_timeout_seconds >= 5 && var.lambda_timeout_seconds <= 900
    error_message = "lambda_timeout_seconds must be between 5 and 900 (the queue's visibility timeout, 6x, must stay within 12 hours)."
  }
}

variable "lambda_reserved_concurrency" {
  description = "Reserved concurrency of the processor Lambda; -1 leaves it unreserved. The event source mapping's maximum concurrency (event_source_max_concurrency) is the usual throttle."
  type        = number
  default     = -1

  validation {
    condition     = var.lambda_reserved_concurrency == -1 || var.lambda_reserved_concurrency >= 2
    error_message = "lambda_reserved_concurrency must be -1 (unreserved) or at least 2."
  }
}

variable "event_source_batch_size" {
  description = "Most SQS messages per Lambda invocation (1-10000; over 10 requires a batching window)."
  type        = number
  default     = 100

  validation {
    condition     = var.event_source_batch_size >= 1 && var.event_source_batch_size <= 10000
    error_message = "event_source_batch_size must be between 1 and 10000."
  }
}

variable "event_source_batching_window_seconds" {
  description = "How long the event source mapping waits to fill a batch (0-300 s). Must be at least 1 when the batch size is over 10."
  type        = number
  default     = 1

  validation {
    condition     = var.event_source_batching_window_seconds >= 0 && var.event_source_batching_window_seconds <= 300
    error_message = "event_source_batching_window_seconds must be between 0 and 300."
  }
}

variable "fifo_queue" {
  description = "Make the queue (and its DLQ) FIFO (the default; false for a standard queue, which costs about three times as much in shadow operations: docs/deploy-aws.md): one message group per thing, so the processor writes each batch as one blind shadow update and keeps nothing of its own in state.reported (docs/aws-processing.md, Two write modes). The event source mapping then takes at most 10 messages per batch, with no batching window."
  type        = bool
  default     = true
}

variable "event_source_max_concurrency" {
  description = "Most concurrent processor invocations the SQS event source mapping starts (2-1000). Bounds the rate of AWS IoT API calls."
  type        = number
  default     = 20

  validation {
    condition     = var.event_source_max_concurrency >= 2 && var.event_source_max_concurrency <= 1000
    error_message = "event_source_max_concurrency must be between 2 and 1000."
  }
}

variable "publish_topic" {
  description = "If set, the processor also publishes every record to this MQTT topic ({type} and {thing} are replaced per record; e.g. \"coapgw/{type}/{thing}\"). Empty: no iot:Publish permission at all."
  type        = string
  default     = ""

  validation {
    condition     = !can(regex("[#+]", var.publish_topic))
    error_message = "publish_topic must not contain MQTT wildcards (# or +)."
  }
}

variable "lambda_environment" {
  description = "Extra COAPGW_* environment variables for the processor Lambda (e.g. COAPGW_IOT_CONCURRENCY, COAPGW_THING_CACHE_SIZE, COAPGW_LOG_LEVEL). They override the module's own."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.lambda_environment) : startswith(k, "COAPGW_")])
    error_message = "lambda_environment keys must start with COAPGW_."
  }
}

variable "log_retention_days" {
  description = "Retention of the Lambda log groups, in days."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

# ---------------------------------------------------------------------------------------------
# Gateways (EC2 Auto Scaling group)
# ---------------------------------------------------------------------------------------------

variable "vpc_id" {
  description = "VPC of the gateways."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets of the gateways, in at least two Availability Zones. With exposure = \"eip\" they must be public subnets (route to an internet gateway); with \"nlb\" the load balancer is placed in them too."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must list at least two subnets (in different Availability Zones)."
  }
}

variable "gateway_count" {
  description = "Desired number of gateway instances (spread across the subnets' AZs)."
  type        = number
  default     = 2

  validation {
    condition     = var.gateway_count >= 2 && var.gateway_count <= 50
    error_message = "gateway_count must be between 2 and 50 (at least one per AZ in two AZs)."
  }
}

variable "gateway_max_count" {
  description = "Most gateway instances the Auto Scaling group may run. With exposure = \"eip\" there is one Elastic IP per gateway_count, not per possible instance: an instance beyond gateway_count gets no address until one is freed."
  type        = number
  default     = 3

  validation {
    condition     = var.gateway_max_count >= 2 && var.gateway_max_count <= 50
    error_message = "gateway_max_count must be between 2 and 50 and at least gateway_count."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the gateways (arm64/Graviton, the binary is built for linux/arm64)."
  type        = string
  default     = "t4g.small"
}

variable "ami_ssm_parameter" {
  description = "SSM public parameter naming the gateway AMI (Amazon Linux 2023, arm64)."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
}

variable "root_volume_gb" {
  description = "Size of the (encrypted) root volume in GB."
  type        = number
  default     = 16
}

variable "spool_volume_gb" {
  description = "Size of the (encrypted) EBS volume holding the spool, mounted at the service's state directory. Keep it above the gateway's --spool-max-bytes plus a segment."
  type        = number
  default     = 20

  validation {
    condition     = var.spool_volume_gb >= 2 && var.spool_volume_gb <= 16384
    error_message = "spool_volume_gb must be between 2 and 16384."
  }
}

variable "binary_s3_uri" {
  description = "s3://bucket/key of the coapgw linux/arm64 binary the gateways install at boot. The instance role gets s3:GetObject on this object only. Set this or binary_url."
  type        = string
  default     = ""

  validation {
    condition     = var.binary_s3_uri == "" || can(regex("^s3://[a-z0-9.-]{3,63}/.+$", var.binary_s3_uri))
    error_message = "binary_s3_uri must look like s3://bucket/key."
  }
}

variable "binary_url" {
  description = "https:// URL of the coapgw linux/arm64 binary (used when binary_s3_uri is empty)."
  type        = string
  default     = ""

  validation {
    condition     = var.binary_url == "" || startswith(var.binary_url, "https://")
    error_message = "binary_url must be an https:// URL."
  }
}

variable "binary_sha256" {
  description = "Hex SHA-256 of the binary; the boot script refuses a binary that does not match."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.binary_sha256))
    error_message = "binary_sha256 must be 64 lower-case hex digits."
  }
}

variable "ack_after" {
  description = "When gateways answer 2.04: \"spool\" (after the local fsync; the default) or \"queue\" (after SQS accepted the record). Passed as COAPGW_ACK_AFTER."
  type        = string
  default     = "spool"

  validation {
    condition     = contains(["spool", "queue"], var.ack_after)
    error_message = "ack_after must be \"spool\" or \"queue\"."
  }
}

variable "gateway_environment" {
  description = "Extra COAPGW_* environment variables for the gateways (written to /etc/coapgw/coapgw.env), e.g. COAPGW_SPOOL_MAX_BYTES. They override the module's own (COAPGW_QUEUE, COAPGW_ACK_AFTER, COAPGW_COAP_ADDR, COAPGW_COAPS_ADDR, COAPGW_PLAIN_COAP, COAPGW_FLEET_KEY_SECRET_ARN, COAPGW_DTLS_STATE_FILE, COAPGW_HTTP_ADDR)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.gateway_environment) : can(regex("^COAPGW_[A-Z0-9_]+$", k))])
    error_message = "gateway_environment keys must match ^COAPGW_[A-Z0-9_]+$."
  }
}

variable "http_port" {
  description = "TCP port of the gateways' /metrics, /healthz and /readyz endpoint. Reachable only from inside the VPC (NLB health checks, Prometheus)."
  type        = number
  default     = 8080
}

# ---------------------------------------------------------------------------------------------
# Reaching the gateways
# ---------------------------------------------------------------------------------------------

variable "exposure" {
  description = "How devices reach the gateways: \"eip\" (a static Elastic IP per gateway; each instance claims a free one at boot) or \"nlb\" (one Network Load Balancer with a UDP listener on coaps_port, and on 5683 with allow_plain_coap). With DTLS an NLB may move a device whose NAT rebinds to another gateway, which costs a new handshake: see docs/deploy-aws.md."
  type        = string
  default     = "eip"

  validation {
    condition     = contains(["eip", "nlb"], var.exposure)
    error_message = "exposure must be \"eip\" or \"nlb\"."
  }
}

variable "device_cidrs" {
  description = "CIDRs devices send CoAP from (UDP coaps_port for DTLS, and 5683 with allow_plain_coap). Narrow it to the carrier's NAT/APN ranges when you know them."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.device_cidrs) > 0 && alltrue([for c in var.device_cidrs : can(cidrhost(c, 0))])
    error_message = "device_cidrs must be a non-empty list of valid CIDRs."
  }
}

variable "gateway_public_ip" {
  description = "Give every gateway an auto-assigned public IPv4 address for egress (SQS, S3, SSM) in public subnets without NAT. Always on with exposure = \"eip\" (replaced by the EIP). Set false with exposure = \"nlb\" when the gateways sit in private subnets with a NAT gateway or VPC endpoints."
  type        = bool
  default     = true
}

variable "nlb_subnet_ids" {
  description = "Public subnets of the internet-facing NLB (exposure = \"nlb\"). Empty: subnet_ids."
  type        = list(string)
  default     = []
}

variable "nlb_deletion_protection" {
  description = "Deletion protection of the NLB (exposure = \"nlb\"). Turn off before `destroy`."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------------------------
# Device security: DTLS with pre-shared keys derived from a fleet master key
# ---------------------------------------------------------------------------------------------

variable "fleet_key_secret_arn" {
  description = "Full ARN (with its 6-character suffix) of the Secrets Manager secret holding the fleet master key (32 random bytes), created out of band: see docs/deploy-aws.md. Every device's PSK is derived from it; the gateways and the canary may read this one secret and no other. Passed as COAPGW_FLEET_KEY_SECRET_ARN."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$", var.fleet_key_secret_arn))
    error_message = "fleet_key_secret_arn must be the full ARN of a Secrets Manager secret, arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX (as printed by `aws secretsmanager create-secret`), without wildcards."
  }
}

variable "fleet_key_kms_key_arn" {
  description = "ARN of the customer-managed KMS key that encrypts the fleet key secret, if it is not the account's aws/secretsmanager key. The gateways and the canary then get kms:Decrypt on this key only, and only through Secrets Manager. Empty: the AWS-managed key, no KMS permission needed."
  type        = string
  default     = ""

  validation {
    condition     = var.fleet_key_kms_key_arn == "" || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.fleet_key_kms_key_arn))
    error_message = "fleet_key_kms_key_arn must be empty or a KMS key ARN, arn:aws:kms:REGION:ACCOUNT:key/KEY-ID (not an alias)."
  }
}

variable "coaps_port" {
  description = "UDP port of CoAP over DTLS (coaps) on the gateways, the security group and the NLB. Always open to device_cidrs. Passed as COAPGW_COAPS_ADDR=:PORT."
  type        = number
  default     = 5684

  validation {
    condition     = var.coaps_port >= 1 && var.coaps_port <= 65535 && var.coaps_port != 5683 && floor(var.coaps_port) == var.coaps_port
    error_message = "coaps_port must be a UDP port number other than 5683 (plain CoAP's)."
  }
}

variable "allow_plain_coap" {
  description = "Also accept plain, unauthenticated CoAP on UDP 5683 (security group, NLB listener, COAPGW_PLAIN_COAP=open). Any host in device_cidrs can then write any thing's shadow: use it only while a fleet migrates to DTLS, with device_cidrs narrowed. Default false: 5683 is closed and the gateways run with COAPGW_PLAIN_COAP=off."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------------------------------------
# Alarms and canary
# ---------------------------------------------------------------------------------------------

variable "alarm_email" {
  description = "If set, this address is subscribed to the alarm SNS topic (the subscription must be confirmed from the e-mail)."
  type        = string
  default     = ""

  validation {
    condition     = var.alarm_email == "" || can(regex("^[^@\\s]+@[^@\\s]+$", var.alarm_email))
    error_message = "alarm_email must be empty or an e-mail address."
  }
}

variable "queue_age_alarm_seconds" {
  description = "Alarm when the oldest record in the queue is older than this (the processor is falling behind or failing)."
  type        = number
  default     = 600
}

variable "canary_zip_path" {
  description = "Path of the canary's deployment package built by `make lambda-zip` (bin/lambda/coapgw-canary.zip). Empty: no canary."
  type        = string
  default     = ""
}

variable "canary_schedule" {
  description = "EventBridge schedule expression of the canary."
  type        = string
  default     = "rate(1 minute)"
}

variable "canary_targets" {
  description = "host:port addresses the canary probes with CoAP GET /health over DTLS. Empty: the module's own EIPs or NLB DNS name on coaps_port."
  type        = list(string)
  default     = []
}

variable "canary_identity" {
  description = "PSK identity ({type}/{id}) the canary's DTLS handshakes use; its key is derived from the fleet key like any device's. Empty: canary/<name>. Passed as COAPGW_CANARY_IDENTITY."
  type        = string
  default     = ""

  validation {
    condition     = var.canary_identity == "" || can(regex("^[A-Za-z0-9:_-]{1,128}/[A-Za-z0-9:_-]{1,128}$", var.canary_identity))
    error_message = "canary_identity must be empty or {type}/{id}, each 1-128 characters of letters, digits, ':', '_' and '-'."
  }
}

# ---------------------------------------------------------------------------------------------
# Scale-in drain
# ---------------------------------------------------------------------------------------------

variable "drain_timeout_seconds" {
  description = "Heartbeat timeout of the Auto Scaling termination lifecycle hook: how long a terminating gateway may take to forward its whole spool to SQS (coapgw drain) before the instance and its spool volume go regardless. A drain normally takes seconds; the time matters during an SQS outage."
  type        = number
  default     = 900

  validation {
    condition     = var.drain_timeout_seconds >= 60 && var.drain_timeout_seconds <= 7200
    error_message = "drain_timeout_seconds must be between 60 and 7200 (the lifecycle hook's heartbeat timeout limits)."
  }
}

variable "gateway_lag_alarm_seconds" {
  description = "Alarm when a gateway's oldest record not yet accepted by SQS is older than this (StageLagSeconds from the gateways' EMF metrics): SQS unreachable or throttled, the spool filling."
  type        = number
  default     = 300

  validation {
    condition     = var.gateway_lag_alarm_seconds >= 10
    error_message = "gateway_lag_alarm_seconds must be at least 10."
  }
}

variable "ingest_stopped_alarm_minutes" {
  description = "Alarm when no record has been sent to the queue (SQS NumberOfMessagesSent) for this many minutes: every gateway down or unreachable, or devices silent. 0: no such alarm (fleets that sleep longer)."
  type        = number
  default     = 15

  validation {
    condition     = var.ingest_stopped_alarm_minutes >= 0 && var.ingest_stopped_alarm_minutes <= 1440 && floor(var.ingest_stopped_alarm_minutes) == var.ingest_stopped_alarm_minutes
    error_message = "ingest_stopped_alarm_minutes must be a whole number of minutes from 0 to 1440."
  }
}

variable "iot_downlink" {
  description = "Give the gateways desired state from AWS IoT shadows (docs/downlink.md): an IoT certificate and policy for the gateways (MQTT subscribe to the shadow delta topics), its key in an SSM SecureString parameter, iot:GetThingShadow for a device's first request. See iot_downlink.tf."
  type        = bool
  default     = false
}

variable "iot_downlink_documents" {
  description = "With iot_downlink: also subscribe to the shadows' update/documents, so that a report clearing a delta is known at once. AWS then delivers (and bills) one message to every gateway for every shadow update in the account, i.e. for every applied report; off, a gateway reads a pending delta again with GetThingShadow 10 s after its device's request. See docs/downlink.md for the costs."
  type        = bool
  default     = false
}

variable "iot_rule_example" {
  description = "Create an example AWS IoT rule (iot_rule.tf) sending every accepted classic-shadow update to the CloudWatch Logs group /aws/iot/<name>-telemetry, so that telemetry visibly flows on from the shadows."
  type        = bool
  default     = false
}
