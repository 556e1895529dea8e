output "hosts" {
  description = "map(object({ address = string, port = number, user = string, private_key_file = string, connection = string, groups = list(string), host_key = string, python_interpreter = string })): the app hosts, keyed by inventory hostname"
  value       = module.paas_aws.hosts
}

output "environment" {
  description = "string: the name of this environment"
  value       = module.paas_aws.environment
}

output "instance_id" {
  description = "string: ID of the EC2 instance"
  value       = module.paas_aws.instance_id
}

output "ami_id" {
  description = "string: AMI the instance was launched from"
  value       = module.paas_aws.ami_id
}

output "public_ip" {
  description = "string: public IPv4 address of the host (\"\" when it has none; it changes when the instance is stopped and started)"
  value       = module.paas_aws.public_ip
}

output "private_ip" {
  description = "string: private IPv4 address of the host"
  value       = module.paas_aws.private_ip
}

output "security_group_id" {
  description = "string: ID of the host's security group"
  value       = module.paas_aws.security_group_id
}

output "key_name" {
  description = "string: name of the EC2 key pair of the login user"
  value       = module.paas_aws.key_name
}

output "host_key" {
  description = "string: public SSH host key to pin, `ssh-ed25519 <base64>` (\"\" when ssh_host_key is null)"
  value       = module.paas_aws.host_key
}
