variable "environment" {
  description = "Name of this environment, as shown in the `environment` output"
  type        = string
  default     = "ssh"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,31}$", var.environment))
    error_message = "environment must be 1-32 characters: a lowercase letter, then lowercase letters, digits or '-'."
  }
}

variable "host_name" {
  description = "Inventory hostname of the server"
  type        = string
  default     = "paas-ssh"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", var.host_name))
    error_message = "host_name must be 1-63 characters: letters, digits, '.', '_' or '-', starting with a letter or digit."
  }
}

variable "address" {
  description = "DNS name or IP address the controller connects to over SSH"
  type        = string

  validation {
    # Starts with a letter or digit, so it can never be read as an ssh option.
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$", var.address))
    error_message = "address must be a DNS name, an IPv4 or an IPv6 address (letters, digits, '.', ':' or '-', starting with a letter or digit)."
  }
}

variable "port" {
  description = "SSH port of the server"
  type        = number
  default     = 22

  validation {
    condition     = var.port == floor(var.port) && var.port >= 1 && var.port <= 65535
    error_message = "port must be an integer from 1 to 65535."
  }
}

variable "user" {
  description = "Account Ansible logs in as (root, or a user with passwordless sudo)"
  type        = string

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.user))
    error_message = "user must be a POSIX user name: a lowercase letter or '_', then up to 31 lowercase letters, digits, '_' or '-'."
  }
}

variable "private_key_path" {
  description = "Path, on the controller, of the SSH private key for `user`. Empty: the controller's SSH agent or default keys"
  type        = string
  default     = ""

  validation {
    condition     = var.private_key_path == "" || (trimspace(var.private_key_path) != "" && !can(regex("[\\n\\r{}]", var.private_key_path)))
    error_message = "private_key_path must be empty or a non-blank path on one line (no '{' or '}')."
  }
}

variable "host_key" {
  description = "The server's SSH public host key to pin, as `<type> <base64>` (e.g. the content of /etc/ssh/ssh_host_ed25519_key.pub; a trailing comment is dropped). Empty: the caller must provide known_hosts itself"
  type        = string
  default     = ""

  validation {
    condition     = var.host_key == "" || can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\\.com|sk-ecdsa-sha2-nistp256@openssh\\.com) AAAA[A-Za-z0-9+/]+=*( [^\\n\\r]*)?$", trimspace(var.host_key)))
    error_message = "host_key must be empty or a public key line '<type> <base64> [comment]' (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521), without a host name in front."
  }
}

variable "groups" {
  description = "Inventory groups the host joins besides `paas_hosts`"
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for g in var.groups : can(regex("^[a-z_][a-z0-9_]{0,62}$", g)) && !contains(["all", "ungrouped"], g)])
    error_message = "Each group must be a lowercase identifier (letters, digits, '_'; not starting with a digit), and not 'all' or 'ungrouped'."
  }
}

variable "python_interpreter" {
  description = "Absolute path of Python 3 on the host, used by Ansible (ansible_python_interpreter). Empty: Ansible's interpreter discovery"
  type        = string
  default     = "/usr/bin/python3"

  validation {
    condition     = var.python_interpreter == "" || can(regex("^/[A-Za-z0-9._/+-]{0,254}$", var.python_interpreter))
    error_message = "python_interpreter must be empty or an absolute path (letters, digits, '.', '_', '/', '+' or '-')."
  }
}
