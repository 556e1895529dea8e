# One EC2 host for the platform: an official Debian or Ubuntu AMI, SSH open to the admin network
# only, app ports open to app_cidrs, IMDSv2 only, an encrypted root volume. Ansible's host roles
# install everything else; user data only installs the bootstrap SSH host key and makes sure python3
# is there (playbooks/host.yml replaces that key with one made on the host, see README.md).

provider "aws" {
  region = var.region
}

locals {
  images = {
    debian12 = {
      owner = "136693071363" # Debian
      name  = "debian-12-${var.architecture == "arm64" ? "arm64" : "amd64"}-*"
      user  = "admin"
    }
    ubuntu2404 = {
      owner = "099720109477" # Canonical
      name  = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-${var.architecture == "arm64" ? "arm64" : "amd64"}-server-*"
      user  = "ubuntu"
    }
  }
  image = local.images[var.os]

  # paas:managed comes last: the IAM policy (iam-policy.json) keys on it, so it cannot be overridden.
  tags = merge(var.tags, {
    Name               = var.name
    "paas:environment" = var.environment
    "paas:managed"     = "true"
  })

  public_key = (
    var.public_key != null ? trimspace(var.public_key) :
    var.public_key_path != null ? trimspace(file(pathexpand(var.public_key_path))) : ""
  )
  private_key_file = (
    var.private_key_path != null ? var.private_key_path :
    var.public_key_path != null ? trimsuffix(pathexpand(var.public_key_path), ".pub") : ""
  )

  admin_cidr_is_ipv6 = strcontains(var.admin_cidr, ":")
  app_rules = {
    for pair in setproduct(var.app_ports, var.app_cidrs) : "${pair[0]} ${pair[1]}" => {
      port = pair[0]
      cidr = pair[1]
    }
  }

  # cloud-init writes the given (bootstrap) host key instead of generating keys, so the key the
  # controller pinned is the only one sshd serves until host.yml replaces it with a key made on the
  # host. The key reaches the host through user data, which cloud-init's ssh module applies once per
  # instance (first boot): reboots and later applies never reinstall it over the replacement.
  cloud_config = merge(
    {
      packages   = ["python3"]
      ssh_pwauth = false
    },
    [
      for key in [var.ssh_host_key] : {
        ssh_deletekeys = true
        ssh_keys = {
          ed25519_private = key.private_key
          ed25519_public  = join(" ", slice(split(" ", trimspace(key.public_key)), 0, 2))
        }
      } if key != null
    ]...
  )
  host_key = nonsensitive(var.ssh_host_key == null ? "" : join(" ", slice(split(" ", trimspace(var.ssh_host_key.public_key)), 0, 2)))
}

data "aws_ami" "this" {
  count = var.ami_id == null ? 1 : 0

  most_recent = true
  owners      = [local.image.owner]

  # The name carries the architecture (amd64/arm64); both publishers ship HVM images only.
  filter {
    name   = "name"
    values = [local.image.name]
  }
}

data "aws_subnet" "this" {
  count = var.subnet_id == null ? 0 : 1

  id = var.subnet_id
}

resource "aws_key_pair" "this" {
  key_name_prefix = "${var.name}-"
  public_key      = local.public_key
  tags            = local.tags

  lifecycle {
    precondition {
      condition     = (var.public_key == null) != (var.public_key_path == null)
      error_message = "Set exactly one of public_key and public_key_path."
    }
    precondition {
      condition     = can(regex("^(ssh-ed25519|ssh-rsa) AAAA[A-Za-z0-9+/]+=*( [^\\n\\r]*)?$", local.public_key))
      error_message = "The public key must be one 'ssh-ed25519 AAAA...' or 'ssh-rsa AAAA...' line."
    }
  }
}

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-"
  description = "Mini PaaS host ${var.name}: SSH from the admin network, app ports"
  # null: the default VPC.
  vpc_id = one(data.aws_subnet.this[*].vpc_id)
  tags   = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  security_group_id = aws_security_group.this.id
  description       = "SSH from the admin network"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = local.admin_cidr_is_ipv6 ? null : var.admin_cidr
  cidr_ipv6         = local.admin_cidr_is_ipv6 ? var.admin_cidr : null
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "app" {
  for_each = local.app_rules

  security_group_id = aws_security_group.this.id
  description       = "App port ${each.value.port}"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = strcontains(each.value.cidr, ":") ? null : each.value.cidr
  cidr_ipv6         = strcontains(each.value.cidr, ":") ? each.value.cidr : null
  tags              = local.tags
}

# Outbound stays open: the host pulls packages, images and app sources from wherever they live.
resource "aws_vpc_security_group_egress_rule" "this" {
  security_group_id = aws_security_group.this.id
  description       = "All outbound traffic"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

resource "aws_instance" "this" {
  ami                         = var.ami_id != null ? var.ami_id : data.aws_ami.this[0].id
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_id
  associate_public_ip_address = var.associate_public_ip_address
  vpc_security_group_ids      = [aws_security_group.this.id]
  key_name                    = aws_key_pair.this.key_name
  user_data                   = "#cloud-config\n${yamlencode(local.cloud_config)}"

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
    # One hop: containers on the host (one hop further) get no IMDS token, so neither
    # credentials nor the user data (which holds the host key) are readable from an app.
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size
    encrypted             = true
    kms_key_id            = var.root_volume_kms_key_id
    delete_on_termination = true
  }

  # Burstable types default to "unlimited" CPU credits, which bill beyond the free tier.
  dynamic "credit_specification" {
    for_each = can(regex("^t[0-9]", var.instance_type)) ? ["standard"] : []
    content {
      cpu_credits = credit_specification.value
    }
  }

  volume_tags = local.tags
  tags        = local.tags

  lifecycle {
    # A newer AMI must not silently replace a running host: replace it deliberately with
    # `terraform apply -replace=aws_instance.this`. The same holds for user data, which cloud-init
    # applies at an instance's first boot only.
    ignore_changes = [ami, user_data]
  }
}
