output "hosts" {
  description = "map(object({ address = string, port = number, user = string, private_key_file = string, connection = string, groups = list(string), host_key = string, python_interpreter = string })): the app hosts, keyed by inventory hostname"
  value       = module.paas_ssh.hosts
}

output "environment" {
  description = "string: the name of this environment"
  value       = module.paas_ssh.environment
}
