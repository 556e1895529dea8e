# A server the user already has, reached over SSH. Nothing is created; the resource records the
# host in state so that `terraform output` reports it like every other environment. Ansible's
# host role prepares the server.

locals {
  host = {
    address            = var.address
    port               = var.port
    user               = var.user
    private_key_file   = var.private_key_path
    connection         = "ssh"
    python_interpreter = var.python_interpreter
    groups             = distinct(concat(["paas_hosts"], var.groups))
    # "<type> <base64>": the comment, if any, is not part of the key.
    host_key = var.host_key == "" ? "" : join(" ", slice(split(" ", trimspace(var.host_key)), 0, 2))
  }
}

resource "terraform_data" "this" {
  input = local.host
}
