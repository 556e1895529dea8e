# This machine as the platform's one app host, with every input of the module set. Nothing is
# created: the module records the host in state, and the outputs below are the inventory contract.

module "paas_local" {
  source = "../.."

  environment = "local"
  host_name   = "localhost"
  groups      = ["development"]
}
