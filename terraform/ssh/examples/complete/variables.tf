variable "host_key" {
  description = "The server's SSH public host key to pin, `<type> <base64>`: the content of its /etc/ssh/ssh_host_ed25519_key.pub"
  type        = string
}
