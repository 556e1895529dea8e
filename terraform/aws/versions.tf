terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }

  # State goes wherever the caller points it: `terraform init -backend-config=path=<file>`.
  # See README.md for the default layout and for a remote (S3) backend.
  backend "local" {}
}
