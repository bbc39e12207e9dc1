# Gateways: one Auto Scaling group across the subnets' AZs, launched from a hardened launch
# template (IMDSv2 only, encrypted volumes, the spool on its own EBS volume, SSM not SSH).

data "aws_ssm_parameter" "ami" {
  name = var.ami_ssm_parameter
}

resource "aws_security_group" "gateway" {
  name        = "${var.name}-gateway"
  description = "coapgw gateways: CoAP over DTLS from devices, metrics from inside the VPC, HTTPS out to AWS APIs"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

# Plain CoAP (5683) is unauthenticated: closed unless allow_plain_coap. DTLS (coaps_port) is
# always open to the devices. internal/deploycheck and tests/plan.tftest.hcl assert both.
resource "aws_vpc_security_group_ingress_rule" "coap" {
  for_each          = var.allow_plain_coap ? toset(var.device_cidrs) : toset([])
  security_group_id = aws_security_group.gateway.id
  description       = "Plain CoAP over UDP from devices (allow_plain_coap)"
  ip_protocol       = "udp"
  from_port         = 5683
  to_port           = 5683
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "coaps" {
  for_each          = toset(var.device_cidrs)
  security_group_id = aws_security_group.gateway.id
  description       = "CoAP over DTLS from devices"
  ip_protocol       = "udp"
  from_port         = var.coaps_port
  to_port           = var.coaps_port
  cidr_ipv4         = each.value
}

# /metrics, /healthz, /readyz: NLB health checks and in-VPC monitoring only, never the world.
resource "aws_vpc_security_group_ingress_rule" "http" {
  security_group_id = aws_security_group.gateway.id
  description       = "Gateway HTTP (metrics, health) from inside the VPC (NLB health checks, Prometheus)"
  ip_protocol       = "tcp"
  from_port         = var.http_port
  to_port           = var.http_port
  cidr_ipv4         = data.aws_vpc.this.cidr_block
}

# Out: HTTPS to SQS, S3, SSM and the package mirror. DNS and NTP go to the VPC's link-local
# resolvers, which security groups do not filter.
resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.gateway.id
  description       = "HTTPS to AWS APIs (SQS, S3, SSM)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

locals {
  # DTLS always; plain CoAP only with allow_plain_coap, and then "open": with fleet keys every
  # thing has a credential, so the "unbound" policy (plain CoAP only for things without one)
  # would refuse every request. The security group closes 5683 too; the policy is the inner wall.
  gateway_env = merge(
    {
      COAPGW_QUEUE                = aws_sqs_queue.main.url
      COAPGW_ACK_AFTER            = var.ack_after
      COAPGW_COAP_ADDR            = ":5683"
      COAPGW_COAPS_ADDR           = ":${var.coaps_port}"
      COAPGW_PLAIN_COAP           = var.allow_plain_coap ? "open" : "off"
      COAPGW_FLEET_KEY_SECRET_ARN = var.fleet_key_secret_arn
      # Sessions saved at a graceful stop and resumed at start, on the spool volume (the
      # service's state directory); never copied to another gateway.
      COAPGW_DTLS_STATE_FILE = "/var/lib/coapgw/dtls-sessions"
      COAPGW_HTTP_ADDR       = ":${var.http_port}"
      COAPGW_LOG_FORMAT      = "json"
      AWS_REGION             = local.region
      # Stage lag and spool depth to CloudWatch through the local agent (monitoring.tf).
      COAPGW_EMF_INTERVAL  = "60s"
      COAPGW_EMF_ADDR      = "tcp://127.0.0.1:25888"
      COAPGW_EMF_NAMESPACE = local.metrics_namespace
      COAPGW_EMF_LOG_GROUP = aws_cloudwatch_log_group.gateway_metrics.name
    },
    local.iot_downlink_env, # iot_downlink.tf
    var.gateway_environment,
  )

  user_data = templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
    # The command that downloads the binary to the path given as its last argument.
    fetch_binary       = var.binary_s3_uri != "" ? "aws s3 cp --region ${local.region} --only-show-errors '${var.binary_s3_uri}'" : "curl -fsSL --proto '=https' --retry 5 '${var.binary_url}' -o"
    binary_sha256      = var.binary_sha256
    env_file           = join("\n", [for k in sort(keys(local.gateway_env)) : "${k}=${local.gateway_env[k]}"])
    unit_file          = file("${path.module}/../../../systemd/coapgw.service")
    drain_unit_file    = file("${path.module}/../../../systemd/coapgw-drain.service")
    lifecycle_unit     = file("${path.module}/../../../systemd/coapgw-lifecycle.service")
    lifecycle_script   = file("${path.module}/../../../systemd/coapgw-lifecycle")
    drain_stop_seconds = var.drain_timeout_seconds - 60
    lifecycle_env      = "COAPGW_ASG_NAME=${local.gateway_asg_name}\nCOAPGW_LIFECYCLE_HOOK=${local.drain_hook_name}\nAWS_REGION=${local.region}"
    eip_allocation_ids = join(" ", [for e in aws_eip.gateway : e.allocation_id])
    region             = local.region
    iot_downlink       = local.iot_downlink_boot # iot_downlink.tf
  })
}

resource "aws_launch_template" "gateway" {
  name_prefix   = "${var.name}-gateway-"
  description   = "coapgw gateway"
  image_id      = data.aws_ssm_parameter.ami.value
  instance_type = var.instance_type
  ebs_optimized = true
  user_data     = base64encode(local.user_data)

  iam_instance_profile {
    arn = aws_iam_instance_profile.gateway.arn
  }

  # IMDSv2 only; one hop, so nothing but the host itself can reach the instance credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  network_interfaces {
    # A public IP until the instance claims its EIP (and for egress without a NAT gateway).
    associate_public_ip_address = local.use_eip || var.gateway_public_ip
    security_groups             = [aws_security_group.gateway.id]
    delete_on_termination       = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.root_volume_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  # The spool: its own encrypted volume, formatted and mounted by cloud-init at the service's
  # state directory (/var/lib/private/coapgw with DynamicUser).
  block_device_mappings {
    device_name = "/dev/sdf"
    ebs {
      volume_size           = var.spool_volume_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${var.name}-gateway" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = "${var.name}-gateway" })
  }

  tags = local.tags
}

locals {
  # Known before the group exists: the instances' cloud-init and the IAM policy name them.
  gateway_asg_name = "${var.name}-gateway"
  drain_hook_name  = "${var.name}-drain"
}

resource "aws_autoscaling_group" "gateway" {
  # checkov:skip=CKV2_AWS_15:With exposure = "eip" there is no load balancer to take health checks from; with "nlb" health_check_type is ELB.
  name                      = local.gateway_asg_name
  vpc_zone_identifier       = var.subnet_ids
  desired_capacity          = var.gateway_count
  min_size                  = var.gateway_count
  max_size                  = max(var.gateway_max_count, var.gateway_count)
  health_check_type         = local.use_nlb ? "ELB" : "EC2"
  health_check_grace_period = 120
  target_group_arns         = concat(aws_lb_target_group.coaps[*].arn, aws_lb_target_group.coap[*].arn)
  default_instance_warmup   = 60

  launch_template {
    id      = aws_launch_template.gateway.id
    version = aws_launch_template.gateway.latest_version
  }

  # Scale-in, instance refresh and health replacements all wait in Terminating:Wait until the
  # instance's coapgw-lifecycle has stopped the gateway and forwarded its whole spool to SQS
  # (deploy/systemd/coapgw-lifecycle): the spool volume is deleted with the instance, and its
  # records were already acknowledged with 2.04. An initial hook, so that the first instances
  # have it too. Past the heartbeat timeout the termination goes on regardless.
  initial_lifecycle_hook {
    name                 = local.drain_hook_name
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    heartbeat_timeout    = var.drain_timeout_seconds
    default_result       = "CONTINUE"
  }

  # Replace instances one at a time when the launch template changes (new binary, new settings).
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = "${var.name}-gateway" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}

# ---------------------------------------------------------------------------------------------
# exposure = "eip": one static address per gateway (gateway_count, the group's desired and
# minimum size); each instance claims a free one at boot. Not one per possible instance: an
# address no instance holds would be handed to devices and probed by the canary, which then
# fails forever. A replacement takes over the address of the instance it replaces once that one
# has drained and terminated (coapgw-claim-eip waits for it).
# ---------------------------------------------------------------------------------------------

resource "aws_eip" "gateway" {
  # checkov:skip=CKV2_AWS_19:The addresses are associated by the instances themselves at boot (cloud-init, ec2:AssociateAddress), since Auto Scaling instances are not known to Terraform.
  count  = local.use_eip ? var.gateway_count : 0
  domain = "vpc"
  tags   = merge(local.tags, { Name = "${var.name}-gateway-${count.index}" })
}

# ---------------------------------------------------------------------------------------------
# exposure = "nlb": a UDP listener on coaps_port (and on 5683 with allow_plain_coap), TCP health
# check on the HTTP port. The NLB pins a UDP flow to a target by its 5-tuple for 120 s of idle
# time: a device whose NAT rebinds (new source address or port) may land on another gateway,
# which has no DTLS session for it, and must handshake again (docs/deploy-aws.md, section 6).
# ---------------------------------------------------------------------------------------------

resource "aws_lb" "coap" {
  # checkov:skip=CKV_AWS_150:Deletion protection is var.nlb_deletion_protection (default true); only the throwaway basic example turns it off so that destroy works.
  # checkov:skip=CKV_AWS_91:NLB access logs cover TLS listeners only; these listeners are UDP, so logs would stay empty.
  count                            = local.use_nlb ? 1 : 0
  name                             = "${var.name}-coap"
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = length(var.nlb_subnet_ids) > 0 ? var.nlb_subnet_ids : var.subnet_ids
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.nlb_deletion_protection
  tags                             = local.tags
}

resource "aws_lb_target_group" "coap" {
  count                = local.use_nlb && var.allow_plain_coap ? 1 : 0
  name                 = "${var.name}-coap"
  port                 = 5683
  protocol             = "UDP"
  target_type          = "instance"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  health_check {
    protocol            = "TCP"
    port                = tostring(var.http_port)
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = local.tags
}

resource "aws_lb_target_group" "coaps" {
  count                = local.use_nlb ? 1 : 0
  name                 = "${var.name}-coaps"
  port                 = var.coaps_port
  protocol             = "UDP"
  target_type          = "instance"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  health_check {
    protocol            = "TCP"
    port                = tostring(var.http_port)
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = local.tags
}

resource "aws_lb_listener" "coap" {
  count             = local.use_nlb && var.allow_plain_coap ? 1 : 0
  load_balancer_arn = aws_lb.coap[0].arn
  port              = 5683
  protocol          = "UDP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.coap[0].arn
  }
}

resource "aws_lb_listener" "coaps" {
  count             = local.use_nlb ? 1 : 0
  load_balancer_arn = aws_lb.coap[0].arn
  port              = var.coaps_port
  protocol          = "UDP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.coaps[0].arn
  }
}
