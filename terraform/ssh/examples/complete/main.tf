# A server you already have as the platform's app host, with every input of the module set.
# 203.0.113.10 is a documentation address (RFC 5737): put your server's address there.

module "paas_ssh" {
  source = "../.."

  environment        = "ssh"
  host_name          = "paas-ssh"
  address            = "203.0.113.10"
  port               = 22
  user               = "debian"
  private_key_path   = pathexpand("~/.ssh/id_ed25519")
  host_key           = var.host_key
  groups             = ["production"]
  python_interpreter = "/usr/bin/python3"
}
