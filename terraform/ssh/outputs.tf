# Every environment emits the same two outputs: the inventory contract read by inventory/terraform.py
# and by the API service. Terraform outputs take no `type` argument, so each value is built with
# explicit conversions and its type is stated first in the description.

output "hosts" {
  description = "map(object({ address = string, port = number, user = string, private_key_file = string, connection = string, groups = list(string), host_key = string, python_interpreter = string })): the app hosts, keyed by inventory hostname"
  value = {
    (var.host_name) = {
      address            = tostring(terraform_data.this.output.address)
      port               = tonumber(terraform_data.this.output.port)
      user               = tostring(terraform_data.this.output.user)
      private_key_file   = tostring(terraform_data.this.output.private_key_file)
      connection         = tostring(terraform_data.this.output.connection)
      groups             = tolist(terraform_data.this.output.groups)
      host_key           = tostring(terraform_data.this.output.host_key)
      python_interpreter = tostring(terraform_data.this.output.python_interpreter)
    }
  }
}

output "environment" {
  description = "string: the name of this environment"
  value       = tostring(var.environment)
}
