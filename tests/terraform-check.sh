#!/usr/bin/env bash
# Static checks of the Terraform root modules (called by `make lint`); runs offline.
#   1. terraform fmt -check -recursive terraform
#   2. each terraform/<env>/ has its five files, and terraform validate passes in it
# Validation runs on a copy of each module with a throw-away TF_DATA_DIR, so nothing (not even a
# .terraform.lock.hcl) is written in the repository. Providers come from a local filesystem mirror
# when one is installed (/opt/tf-plugins, or wherever terraform-provider-aws* is found); otherwise
# from the registry, as for any user.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

find_mirror() {
  if [ -d /opt/tf-plugins/registry.terraform.io ]; then
    echo /opt/tf-plugins
    return
  fi
  # <mirror>/registry.terraform.io/hashicorp/aws/<version>/<os_arch>/terraform-provider-aws_*
  local provider
  provider=$(find / -xdev -name 'terraform-provider-aws*' -path '*/registry.terraform.io/hashicorp/aws/*' \
    -not -path '*/.terraform/*' -print -quit 2>/dev/null || true)
  if [ -n "$provider" ]; then
    dirname "$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$provider")")")")")"
  fi
}

mirror=$(find_mirror)
if [ -n "$mirror" ]; then
  echo "terraform-check: providers from the filesystem mirror $mirror"
  cat >"$work/terraformrc" <<RC
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/*/*"]
  }
  direct {
    exclude = ["registry.terraform.io/*/*"]
  }
}
RC
  export TF_CLI_CONFIG_FILE=$work/terraformrc
elif [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -f "$TF_CLI_CONFIG_FILE" ]; then
  unset TF_CLI_CONFIG_FILE # points at a missing file: use Terraform's defaults (the registry)
fi
export TF_IN_AUTOMATION=1 TF_INPUT=0

echo "terraform-check: terraform fmt -check -recursive terraform"
terraform fmt -check -recursive -diff terraform

status=0
for dir in terraform/*/; do
  env=$(basename "$dir")
  for file in main.tf variables.tf outputs.tf versions.tf README.md; do
    if [ ! -f "$dir$file" ]; then
      echo "terraform-check: $dir$file is missing" >&2
      status=1
    fi
  done
  for json in "$dir"*.json; do
    [ -e "$json" ] || continue
    python3 -m json.tool "$json" >/dev/null || { echo "terraform-check: $json is not valid JSON" >&2; status=1; }
  done

  mkdir -p "$work/$env"
  cp "$dir"*.tf "$work/$env/"
  export TF_DATA_DIR=$work/$env/.terraform
  if ! log=$(terraform -chdir="$work/$env" init -backend=false -no-color 2>&1); then
    echo "$log" >&2
    echo "terraform-check: terraform init failed in $dir" >&2
    status=1
    continue
  fi
  if terraform -chdir="$work/$env" validate -no-color; then
    echo "terraform-check: $dir valid"
  else
    echo "terraform-check: terraform validate failed in $dir" >&2
    status=1
  fi
done
exit "$status"
