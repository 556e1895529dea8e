"""Mini PaaS: a small self-service platform, a REST control plane over Ansible and Terraform."""

__version__ = "0.1.0"
