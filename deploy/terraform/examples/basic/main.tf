# A minimal deployment: the default VPC's subnets, two gateways with Elastic IPs, CoAP over DTLS
# only (UDP 5684), e-mail alarms.
#
#   make lambda-zip
#   # the fleet master key, once, out of band (docs/deploy-aws.md, "DTLS in the deployment"):
#   aws secretsmanager create-secret --name coapgw/fleet-key \
#       --secret-binary fileb://<(openssl rand 32) --query ARN --output text
#   GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -o bin/coapgw-linux-arm64 ./cmd/coapgw
#   aws s3 cp bin/coapgw-linux-arm64 s3://my-artifacts/coapgw/coapgw-linux-arm64
#   tofu init && tofu apply -var binary_s3_uri=s3://my-artifacts/coapgw/coapgw-linux-arm64 \
#       -var binary_sha256=$(sha256sum bin/coapgw-linux-arm64 | cut -d' ' -f1) \
#       -var fleet_key_secret_arn=<the ARN printed above>

provider "aws" {
  region = var.region

  default_tags {
    tags = { Project = "coapgw" }
  }
}

data "aws_vpc" "default" {
  default = true
}

data "aws_subnets" "default" {
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default.id]
  }
  filter {
    name   = "default-for-az"
    values = ["true"]
  }
}

module "coapgw" {
  source = "../../modules/coapgw"

  name       = var.name
  vpc_id     = data.aws_vpc.default.id
  subnet_ids = slice(sort(data.aws_subnets.default.ids), 0, 2)
  exposure   = var.exposure

  lambda_zip_path = "${path.root}/../../../../bin/lambda/coapgw-lambda.zip"
  canary_zip_path = "${path.root}/../../../../bin/lambda/coapgw-canary.zip"

  binary_s3_uri = var.binary_s3_uri
  binary_sha256 = var.binary_sha256

  fleet_key_secret_arn = var.fleet_key_secret_arn
  allow_plain_coap     = var.allow_plain_coap

  publish_topic = var.publish_topic
  alarm_email   = var.alarm_email

  # The example is meant to be destroyed again.
  nlb_deletion_protection = false
}
