# This machine as the one app host: Ansible runs against it with the local connection.
# Nothing is created; the resource only records the host in state so that `terraform output`
# reports it, the same way every other environment does.

locals {
  host = {
    address          = "localhost"
    port             = 0
    user             = ""
    private_key_file = ""
    connection       = "local"
    # The controller's own Python (ansible_playbook_python): it has what the roles need.
    python_interpreter = ""
    groups             = distinct(concat(["paas_hosts"], var.groups))
    host_key           = ""
  }
}

resource "terraform_data" "this" {
  input = local.host
}
