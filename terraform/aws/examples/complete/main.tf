# One EC2 host for the platform, with the module's inputs set to what a small production host
# could use. 203.0.113.7 and 198.51.100.0/24 are documentation networks (RFC 5737): put your own
# admin address and the networks your users come from there. The module configures the aws
# provider itself (region); credentials come from the usual AWS sources.

module "paas_aws" {
  source = "../.."

  region      = "eu-west-1"
  environment = "aws"
  name        = "paas-aws"
  tags = {
    Project = "mini-paas"
    Example = "complete"
  }

  # Placement. subnet_id = null: a default subnet of the default VPC.
  subnet_id                   = null
  associate_public_ip_address = true

  # Image and size. ami_id = null: the newest official image of `os`.
  os                     = "debian12"
  architecture           = "x86_64"
  ami_id                 = null
  instance_type          = "t3.micro"
  root_volume_size       = 20
  root_volume_kms_key_id = null

  # Access: SSH from one admin address, the apps' public ports from the users' network.
  admin_cidr         = "203.0.113.7/32"
  app_ports          = [8080, 8443]
  app_cidrs          = ["198.51.100.0/24"]
  public_key_path    = "~/.ssh/id_ed25519.pub" # or public_key = "ssh-ed25519 AAAA...", not both
  private_key_path   = pathexpand("~/.ssh/id_ed25519")
  ssh_user           = null # the image's login user: admin for debian12
  python_interpreter = "/usr/bin/python3"
  ssh_host_key       = var.ssh_host_key
}
