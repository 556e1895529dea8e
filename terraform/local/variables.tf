variable "environment" {
  description = "Name of this environment, as shown in the `environment` output"
  type        = string
  default     = "local"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,31}$", var.environment))
    error_message = "environment must be 1-32 characters: a lowercase letter, then lowercase letters, digits or '-'."
  }
}

variable "host_name" {
  description = "Inventory hostname of this machine"
  type        = string
  default     = "localhost"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", var.host_name))
    error_message = "host_name must be 1-63 characters: letters, digits, '.', '_' or '-', starting with a letter or digit."
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
