terraform {
  # OpenTofu >= 1.6 or Terraform >= 1.6 (cross-variable validation needs >= 1.9 in Terraform;
  # this module only validates single variables, so 1.6 suffices).
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.70"
    }
  }
}
