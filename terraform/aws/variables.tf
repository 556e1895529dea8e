################################################################################
# Placement
################################################################################

variable "region" {
  description = "AWS region to create the host in"
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-west-1."
  }
}

variable "environment" {
  description = "Name of this environment: the `paas:environment` tag and the `environment` output"
  type        = string
  default     = "aws"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,31}$", var.environment))
    error_message = "environment must be 1-32 characters: a lowercase letter, then lowercase letters, digits or '-'."
  }
}

variable "name" {
  description = "Name of the host: its inventory hostname, `Name` tag, and the prefix of the key pair and security group names"
  type        = string
  default     = "paas-aws"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,38}$", var.name))
    error_message = "name must be 1-39 characters: a lowercase letter, then lowercase letters, digits or '-'."
  }
}

variable "subnet_id" {
  description = "Subnet to launch the host in. null: a default subnet of the region's default VPC"
  type        = string
  default     = null

  validation {
    condition     = var.subnet_id == null || can(regex("^subnet-[0-9a-f]{8,17}$", var.subnet_id))
    error_message = "subnet_id must be null or a subnet ID such as subnet-0123456789abcdef0."
  }
}

variable "associate_public_ip_address" {
  description = "Give the host a public IPv4 address (the controller connects to it; without one, to the private address). null: the subnet's default"
  type        = bool
  default     = null
}

variable "tags" {
  description = "Tags added to every resource (Name, paas:environment and paas:managed are always set)"
  type        = map(string)
  default     = {}
}

################################################################################
# Instance
################################################################################

variable "os" {
  description = "Operating system of the host: debian12 (official Debian AMI, login user admin) or ubuntu2404 (official Canonical AMI, login user ubuntu)"
  type        = string
  default     = "debian12"

  validation {
    condition     = contains(["debian12", "ubuntu2404"], var.os)
    error_message = "os must be \"debian12\" or \"ubuntu2404\"."
  }
}

variable "architecture" {
  description = "CPU architecture of the AMI; must match instance_type (x86_64 for t3.*, arm64 for t4g.*)"
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be \"x86_64\" or \"arm64\"."
  }
}

variable "ami_id" {
  description = "AMI to launch instead of the newest official image of `os` (the lookup is skipped). The image must be of the same OS family, since the login user follows `os`"
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be null or an AMI ID such as ami-0123456789abcdef0."
  }
}

variable "instance_type" {
  description = "EC2 instance type (t3.micro is in the AWS free tier)"
  type        = string
  default     = "t3.micro"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be an EC2 instance type such as t3.micro."
  }
}

variable "root_volume_size" {
  description = "Size of the encrypted gp3 root volume in GiB (the free tier covers 30 GiB)"
  type        = number
  default     = 20

  validation {
    condition     = var.root_volume_size == floor(var.root_volume_size) && var.root_volume_size >= 8 && var.root_volume_size <= 16384
    error_message = "root_volume_size must be an integer from 8 to 16384 (GiB)."
  }
}

variable "root_volume_kms_key_id" {
  description = "KMS key (ID or ARN) that encrypts the root volume. null: the account's default EBS key (aws/ebs)"
  type        = string
  default     = null
}

################################################################################
# Access
################################################################################

variable "admin_cidr" {
  description = "The only network allowed to reach SSH (port 22), e.g. your office or VPN as 203.0.113.0/24 or one address as 203.0.113.7/32. Its prefix is at least /8 (never 0.0.0.0/0)"
  type        = string

  validation {
    condition = (
      can(cidrsubnet(var.admin_cidr, 0, 0)) &&
      try(cidrsubnet(var.admin_cidr, 0, 0) == var.admin_cidr, false) &&
      try(tonumber(split("/", var.admin_cidr)[1]) > 0, false)
    )
    error_message = "admin_cidr must be one IPv4 or IPv6 network in canonical CIDR form (network address, e.g. 203.0.113.0/24 or 203.0.113.7/32) and narrower than the whole Internet (not 0.0.0.0/0 or ::/0)."
  }

  # A separate rule, so its message is the only one for a well-formed but too wide network (/1 to /7:
  # half the Internet and less would still reach SSH). Malformed values and /0 are refused above.
  validation {
    condition = try(
      tonumber(split("/", var.admin_cidr)[1]) == 0 || tonumber(split("/", var.admin_cidr)[1]) >= 8,
      true
    )
    error_message = "admin_cidr must have a prefix length of at least /8 (e.g. 10.0.0.0/8, 203.0.113.0/24, or one address as 203.0.113.7/32): a shorter prefix opens SSH to a large part of the Internet."
  }
}

variable "app_ports" {
  description = "TCP ports the apps are served on, open to app_cidrs"
  type        = list(number)
  default     = [8080]

  validation {
    condition     = alltrue([for p in var.app_ports : p == floor(p) && p >= 1024 && p <= 65535])
    error_message = "Each app port must be an integer from 1024 to 65535 (SSH and other system ports are not app ports)."
  }
}

variable "app_cidrs" {
  description = "Networks allowed to reach app_ports (the default, the whole IPv4 Internet, applies to app ports only, never to SSH)"
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for c in var.app_cidrs : try(cidrsubnet(c, 0, 0) == c, false)])
    error_message = "Each entry of app_cidrs must be an IPv4 or IPv6 network in canonical CIDR form, e.g. 0.0.0.0/0 or 198.51.100.0/24."
  }
}

variable "public_key" {
  description = "SSH public key (ssh-ed25519 or ssh-rsa line) installed for the login user. Set this or public_key_path"
  type        = string
  default     = null

  validation {
    condition     = var.public_key == null || can(regex("^(ssh-ed25519|ssh-rsa) AAAA[A-Za-z0-9+/]+=*( [^\\n\\r]*)?$", trimspace(var.public_key)))
    error_message = "public_key must be null or one 'ssh-ed25519 AAAA...' or 'ssh-rsa AAAA...' line (EC2 key pairs support no other type)."
  }
}

variable "public_key_path" {
  description = "Path of the SSH public key file, read instead of public_key (e.g. ~/.ssh/id_ed25519.pub)"
  type        = string
  default     = null

  validation {
    condition     = var.public_key_path == null || try(trimspace(var.public_key_path) != "", false)
    error_message = "public_key_path must be null or a non-empty path."
  }
}

variable "private_key_path" {
  description = "Path, on the controller, of the private key matching the public key; reported to the inventory. null: public_key_path without its .pub suffix, or \"\" (the SSH agent or default keys) when public_key is given"
  type        = string
  default     = null

  validation {
    condition     = var.private_key_path == null || try(!can(regex("[\\n\\r]", var.private_key_path)), false)
    error_message = "private_key_path must be null or a path on one line."
  }
}

variable "ssh_user" {
  description = "Login user of the AMI. null: admin for debian12, ubuntu for ubuntu2404"
  type        = string
  default     = null

  validation {
    condition     = var.ssh_user == null || can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user))
    error_message = "ssh_user must be null or a POSIX user name."
  }
}

variable "python_interpreter" {
  description = "Absolute path of Python 3 on the host (the official Debian and Ubuntu images have /usr/bin/python3), used by Ansible (ansible_python_interpreter). Empty: Ansible's interpreter discovery"
  type        = string
  default     = "/usr/bin/python3"

  validation {
    condition     = var.python_interpreter == "" || can(regex("^/[A-Za-z0-9._/+-]{0,254}$", var.python_interpreter))
    error_message = "python_interpreter must be empty or an absolute path (letters, digits, '.', '_', '/', '+' or '-')."
  }
}

variable "ssh_host_key" {
  description = "The host's bootstrap SSH ed25519 host key pair, generated by the caller (`ssh-keygen -t ed25519 -N '' -f key`): private_key is the OpenSSH private key, public_key the matching .pub line. Installed at first boot (only) so the controller can pin the host key before it ever connects; playbooks/host.yml with sshd_host_key_rotate=true then replaces it with a key made on the host. null: the host generates its own keys (then pin them out of band)"
  type = object({
    private_key = string
    public_key  = string
  })
  default   = null
  sensitive = true

  validation {
    condition = var.ssh_host_key == null || try(
      strcontains(var.ssh_host_key.private_key, "-----BEGIN OPENSSH PRIVATE KEY-----") &&
      can(regex("^ssh-ed25519 AAAA[A-Za-z0-9+/]+=*( [^\\n\\r]*)?$", trimspace(var.ssh_host_key.public_key))),
      false
    )
    error_message = "ssh_host_key must be null or { private_key = an OpenSSH private key, public_key = its 'ssh-ed25519 AAAA...' line }."
  }
}
