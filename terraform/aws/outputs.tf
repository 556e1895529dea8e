# Every environment emits the same two outputs, hosts and environment: the inventory contract read by
# inventory/terraform.py and by the API service. Terraform outputs take no `type` argument, so each
# value is built with explicit conversions and its type is stated first in the description.

output "hosts" {
  description = "map(object({ address = string, port = number, user = string, private_key_file = string, connection = string, groups = list(string), host_key = string, python_interpreter = string })): the app hosts, keyed by inventory hostname"
  value = {
    (var.name) = {
      address            = tostring(aws_instance.this.public_ip != "" ? aws_instance.this.public_ip : aws_instance.this.private_ip)
      port               = tonumber(22)
      user               = tostring(var.ssh_user != null ? var.ssh_user : local.image.user)
      private_key_file   = tostring(local.private_key_file)
      connection         = tostring("ssh")
      groups             = tolist(["paas_hosts"])
      host_key           = tostring(local.host_key)
      python_interpreter = tostring(var.python_interpreter)
    }
  }
}

output "environment" {
  description = "string: the name of this environment"
  value       = tostring(var.environment)
}

output "instance_id" {
  description = "string: ID of the EC2 instance"
  value       = aws_instance.this.id
}

output "ami_id" {
  description = "string: AMI the instance was launched from"
  value       = aws_instance.this.ami
}

output "public_ip" {
  description = "string: public IPv4 address of the host (\"\" when it has none; it changes when the instance is stopped and started)"
  value       = aws_instance.this.public_ip
}

output "private_ip" {
  description = "string: private IPv4 address of the host"
  value       = aws_instance.this.private_ip
}

output "security_group_id" {
  description = "string: ID of the host's security group"
  value       = aws_security_group.this.id
}

output "key_name" {
  description = "string: name of the EC2 key pair of the login user"
  value       = aws_key_pair.this.key_name
}

output "host_key" {
  description = "string: public SSH host key to pin, `ssh-ed25519 <base64>` (\"\" when ssh_host_key is null)"
  value       = local.host_key
}
