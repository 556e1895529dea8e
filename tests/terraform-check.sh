#!/usr/bin/env bash
# Static checks of the Terraform root modules (called by `make lint`); runs offline.
#   1. terraform fmt -check -recursive terraform
#   2. each terraform/<env>/ has its five files and an examples/ dir, and each examples/<name>/ its own
#      main.tf, outputs.tf, versions.tf and README.md, re-exporting every output of the module
#   3. each README's Inputs and Outputs tables agree with the variable and output blocks: names, and
#      type, default (or "required") and sensitive for variables, type for outputs (the type an
#      output's description starts with). An example's README is checked when it has such a table.
#   4. terraform validate passes in each module and in each of its examples
# Validation runs on a copy of each terraform/<env>/ (examples included, so their `source = "../.."`
# still resolves) with a throw-away TF_DATA_DIR, so nothing (not even a .terraform.lock.hcl) is written
# in the repository. Providers come from a local filesystem mirror when one is installed
# (/opt/tf-plugins, or wherever terraform-provider-aws* is found); otherwise from the registry, as for
# any user.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The README and diagnostics checks: HCL read by a small scanner (strings, templates, heredocs,
# comments, brackets), enough for variable/output blocks; no third-party package.
cat >"$work/check.py" <<'PY'
import json
import os
import re
import sys
from pathlib import Path

OPEN, CLOSE = "{[(", "}])"
HEREDOC = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_-]*)\n")
BLOCK = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)((?:\s+"[^"\n]*"|\s+[A-Za-z_][A-Za-z0-9_-]*)*)\s*\{')
ATTRIBUTE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)\s*=(?!=)")
problems = []


def skip_comment(text, i):
    """Index after the comment starting at i, or i when there is none."""
    if text.startswith("#", i) or text.startswith("//", i):
        end = text.find("\n", i)
        return len(text) if end < 0 else end
    if text.startswith("/*", i):
        return text.index("*/", i + 2) + 2
    return i


def skip_string(text, i):
    """text[i] is '"': index after the closing quote (templates ${...} and %{...} skipped whole)."""
    i += 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        elif text.startswith(("${", "%{"), i) and not text.startswith(("$${", "%%{"), i - 1):
            i = skip_balanced(text, i + 1)
        else:
            i += 1
    raise ValueError("unterminated string")


def skip_token(text, i):
    """Index after a string, heredoc or comment starting at i, or i when none starts there."""
    if text[i] == '"':
        return skip_string(text, i)
    heredoc = HEREDOC.match(text, i)
    if heredoc:
        closing = re.compile(r"^[ \t]*" + re.escape(heredoc.group(1)) + r"[ \t]*$", re.M)
        end = closing.search(text, heredoc.end())
        if not end:
            raise ValueError("unterminated heredoc")
        return end.end()
    return skip_comment(text, i)


def skip_balanced(text, i):
    """text[i] opens a bracket: index after the bracket that closes it."""
    stack = []
    while i < len(text):
        after = skip_token(text, i)
        if after != i:
            i = after
            continue
        c = text[i]
        if c in OPEN:
            stack.append(CLOSE[OPEN.index(c)])
        elif c in CLOSE:
            if not stack or stack.pop() != c:
                raise ValueError(f"unbalanced {c!r}")
            if not stack:
                return i + 1
        i += 1
    raise ValueError("unterminated bracket")


def expression_end(text, i):
    """End of the attribute value starting at i: the first newline or comment outside brackets."""
    while i < len(text) and text[i] != "\n":
        after = skip_token(text, i)
        if after != i:
            if text[i] in "#/":
                return i
            i = after
        elif text[i] in OPEN:
            i = skip_balanced(text, i)
        else:
            i += 1
    return i


def items(text):
    """The top-level attributes ("attr", name, value) and blocks ("block", type, labels, body) of a body."""
    i = 0
    while True:
        while True:
            while i < len(text) and text[i].isspace():
                i += 1
            after = skip_comment(text, i)
            if after == i:
                break
            i = after
        if i >= len(text):
            return
        attribute = ATTRIBUTE.match(text, i)
        block = BLOCK.match(text, i)
        if attribute:
            end = expression_end(text, attribute.end())
            yield "attr", attribute.group(1), text[attribute.end() : end].strip()
            i = end
        elif block:
            end = skip_balanced(text, block.end() - 1)
            labels = re.findall(r'"([^"\n]*)"', block.group(2))
            yield "block", block.group(1), labels, text[block.end() : end - 1]
            i = end
        else:
            raise ValueError(f"cannot read {text[i : i + 40]!r}")


def canonical(expression):
    """An expression without layout: no whitespace or comments outside strings, one ',' between items."""
    out, i = [], 0
    while i < len(expression):
        after = skip_token(expression, i)
        if after != i:
            if expression[i] == '"':
                out.append(expression[i:after])
            elif expression[i] != "<":  # a comment: a separator
                out.append(",")
            else:
                out.append(expression[i:after])
            i = after
            continue
        c = expression[i]
        out.append("," if c in ",\n" else "" if c.isspace() else c)
        i += 1
    text = re.sub(r",+", ",", "".join(out))
    return re.sub(r"([{\[(]),|,([}\])])", r"\1\2", text).strip(",")


def declarations(module_dir, kind):
    """{name: {attribute: value}} of the `variable` or `output` blocks in module_dir/*.tf."""
    found = {}
    for path in sorted(Path(module_dir).glob("*.tf")):
        try:
            for item in items(path.read_text(encoding="utf-8")):
                if item[0] == "block" and item[1] == kind and len(item[2]) == 1:
                    found[item[2][0]] = {a[1]: a[2] for a in items(item[3]) if a[0] == "attr"}
        except ValueError as error:
            problems.append(f"{path}: cannot parse: {error}")
    return found


def string_value(literal):
    if not (literal.startswith('"') and literal.endswith('"')):
        return None
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), literal[1:-1])


def description_type(description):
    """The type an output's description starts with ("string: ..." gives "string")."""
    depth = 0
    for i, c in enumerate(description or ""):
        depth += (c in "({[") - (c in ")}]")
        if c == ":" and depth == 0:
            return description[:i].strip()
    return None


def cells(row):
    """The cells of a Markdown table row ('|' inside code spans or escaped does not split)."""
    out, current, code = [], "", False
    for c in row.strip().strip("|"):
        if c == "`":
            code = not code
        if c == "|" and not code and not current.endswith("\\"):
            out.append(current.strip())
            current = ""
        else:
            current += c
    return [*out, current.strip()]


def tables(readme, section):
    """Rows ({column: cell}) of the tables under the README's '## <section>' heading, or None."""
    lines = readme.splitlines()
    try:
        start = next(n for n, line in enumerate(lines) if line.strip() == f"## {section}")
    except StopIteration:
        return None
    rows, header = [], None
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = [c.lower() for c in cells(line)]
        elif not re.fullmatch(r"[\s|:-]+", line):
            rows.append(dict(zip(header, cells(line), strict=False)))
    return rows


def code(cell):
    found = re.search(r"`([^`]*)`", cell or "")
    return found.group(1) if found else None


def compare(where, kind, table, declared):
    """Problems between a README table's rows and the declared variables or outputs."""
    file = "variables.tf" if kind == "variable" else "outputs.tf"
    rows = {}
    for row in table:
        name = code(row.get("name")) or row.get("name", "")
        if name in rows:
            problems.append(f"{where}: {kind} `{name}` is listed twice in the README")
        rows[name] = row
    for name in sorted(declared.keys() - rows.keys()):
        problems.append(f"{where}: {kind} `{name}` is declared in {file} but missing from the README table")
    for name in sorted(rows.keys() - declared.keys()):
        problems.append(f"{where}: {kind} `{name}` is in the README table but not declared in {file}")
    for name in sorted(rows.keys() & declared.keys()):
        row, block = rows[name], declared[name]
        if kind == "output":
            block = {"type": description_type(string_value(block.get("description", "")))}
        if "type" in row:
            readme_type, tf_type = code(row["type"]), block.get("type")
            if tf_type is None or readme_type is None or canonical(readme_type) != canonical(tf_type):
                source = "variables.tf" if kind == "variable" else "outputs.tf (the start of its description)"
                problems.append(
                    f"{where}: {kind} `{name}`: type is `{readme_type}` in the README, "
                    f"`{tf_type}` in {source}"
                )
            readme_sensitive = "sensitive" in re.sub(r"`[^`]*`", "", row["type"])
            if kind == "variable" and readme_sensitive != (block.get("sensitive") == "true"):
                readme_value, tf_value = str(readme_sensitive).lower(), block.get("sensitive", "false")
                problems.append(
                    f"{where}: {kind} `{name}`: sensitive is {readme_value} in the README, "
                    f"{tf_value} in variables.tf"
                )
        if "default" in row:
            readme_default = code(row["default"]) or row["default"].strip()
            tf_default = block.get("default", "required")
            if canonical(readme_default) != canonical(tf_default):
                problems.append(
                    f"{where}: {kind} `{name}`: default is `{readme_default}` in the README, "
                    f"`{tf_default}` in variables.tf"
                )


def check_readme(module_dir, required):
    readme_path = Path(module_dir) / "README.md"
    if not readme_path.is_file():
        return  # reported by the shell script
    readme = readme_path.read_text(encoding="utf-8")
    for kind, section in (("variable", "Inputs"), ("output", "Outputs")):
        declared = declarations(module_dir, kind)
        table = tables(readme, section)
        if not table and not required:
            continue  # an example's README may describe its inputs or outputs in a sentence
        if table is None:
            problems.append(f"{readme_path}: no '## {section}' section")
            continue
        compare(f"{readme_path}", kind, table, declared)


def check_reexports(module_dir, example_dir):
    missing = declarations(module_dir, "output").keys() - declarations(example_dir, "output").keys()
    for name in sorted(missing):
        problems.append(f"{example_dir}: output `{name}` of the module is not re-exported in outputs.tf")


def diagnostics(label, repo_dir):
    """Print `terraform validate -json` (stdin) diagnostics; exit 1 when the configuration is invalid.
    In an example the module's own empty backend block is ignored, by design: that warning is dropped."""
    text = sys.stdin.read()
    try:
        result = json.loads(text)
    except ValueError:
        print(text, file=sys.stderr)
        sys.exit(1)
    for d in result.get("diagnostics", []):
        filename = d.get("range", {}).get("filename")
        if label == "example" and (d["summary"], filename) == (
            "Backend configuration ignored",
            "../../versions.tf",
        ):
            continue
        at = ""
        if filename:
            at = f" ({os.path.normpath(Path(repo_dir, filename))}:{d['range']['start']['line']})"
        detail = " ".join(d.get("detail", "").split())
        print(
            f"terraform-check: {d['severity']} in {repo_dir}: {d['summary']}{at}: {detail}", file=sys.stderr
        )
    sys.exit(0 if result.get("valid") else 1)


if sys.argv[1] == "docs":
    for env in sorted(p for p in Path(sys.argv[2]).iterdir() if p.is_dir()):
        check_readme(env, required=True)
        for example in sorted(p for p in (env / "examples").glob("*") if p.is_dir()):
            check_readme(example, required=False)
            check_reexports(env, example)
    for problem in problems:
        print(f"terraform-check: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)
elif sys.argv[1] == "diagnostics":
    diagnostics(sys.argv[2], sys.argv[3])
PY

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
  for file in main.tf variables.tf outputs.tf versions.tf README.md examples; do
    if [ ! -e "$dir$file" ]; then
      echo "terraform-check: $dir$file is missing" >&2
      status=1
    fi
  done
  for example in "$dir"examples/*/; do
    [ -d "$example" ] || continue
    for file in main.tf outputs.tf versions.tf README.md; do
      if [ ! -f "$example$file" ]; then
        echo "terraform-check: $example$file is missing" >&2
        status=1
      fi
    done
  done
  for json in "$dir"*.json; do
    [ -e "$json" ] || continue
    python3 -m json.tool "$json" >/dev/null || { echo "terraform-check: $json is not valid JSON" >&2; status=1; }
  done
done

echo "terraform-check: README Inputs/Outputs tables against variables.tf/outputs.tf"
if python3 "$work/check.py" docs terraform; then
  echo "terraform-check: README tables agree"
else
  status=1
fi

# validate <repo dir> <its copy> <module|example>
validate() {
  local log
  export TF_DATA_DIR=$2/.terraform
  if ! log=$(terraform -chdir="$2" init -backend=false -no-color 2>&1); then
    echo "$log" >&2
    echo "terraform-check: terraform init failed in $1" >&2
    return 1
  fi
  if terraform -chdir="$2" validate -json -no-color | python3 "$work/check.py" diagnostics "$3" "$1"; then
    echo "terraform-check: $1 valid"
  else
    echo "terraform-check: terraform validate failed in $1" >&2
    return 1
  fi
}

# One copy per environment, without anything a local run may have left in the repository. The
# validations run in parallel (loading the aws provider's schema takes seconds); their output is
# printed afterwards, in order.
pids=()
for dir in terraform/*/; do
  env=$(basename "$dir")
  tar -C terraform --exclude=.terraform --exclude=.terraform.lock.hcl --exclude='terraform.tfstate*' \
    -cf - "$env" | tar -C "$work" -xf -
  for target in "$dir" "$dir"examples/*/; do
    [ -d "$target" ] || continue
    kind=example
    [ "$target" != "$dir" ] || kind=module
    n=${#pids[@]}
    validate "$target" "$work/${target#terraform/}" "$kind" >"$work/validate.$n.out" 2>"$work/validate.$n.err" &
    pids+=("$!")
  done
done
for n in "${!pids[@]}"; do
  wait "${pids[$n]}" || status=1
  cat "$work/validate.$n.out"
  cat "$work/validate.$n.err" >&2
done
exit "$status"
