variable "ssh_host_key" {
  description = "The host's bootstrap SSH ed25519 host key pair (`ssh-keygen -t ed25519 -N '' -f key`): private_key is the OpenSSH private key, public_key the matching .pub line. Passed as TF_VAR_ssh_host_key, never written in a .tf file. null: the host generates its own keys (then pin them out of band)"
  type = object({
    private_key = string
    public_key  = string
  })
  default   = null
  sensitive = true
}
