#!/usr/bin/env bash
# Audits every package installed in the virtual environment (.venv, or $VENV) against the
# public advisory data, with pip-audit. The project itself (installed editable) is skipped.
#
# Exit codes: 0 no known vulnerability; 1 known vulnerabilities (listed); 2 pip-audit missing
# or broken. When the advisory service cannot be reached nothing is audited: a warning and
# exit 0, or exit 3 with AUDIT_REQUIRED=1.
#
#   PIP_AUDIT_SERVICE=pypi|osv   where advisories come from (default pypi: PyPI's JSON API
#                                per release, /pypi/<name>/<version>/json)
#   PIP_AUDIT_ARGS="--ignore-vuln GHSA-..."   extra pip-audit arguments (e.g. an accepted risk)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/pip-audit" ]; then
  echo "audit: $VENV/bin/pip-audit is missing (pip install -e '.[dev]')" >&2
  exit 2
fi
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
set +e
# shellcheck disable=SC2086 # PIP_AUDIT_ARGS is a list of words
"$VENV/bin/pip-audit" \
  --skip-editable \
  --progress-spinner off \
  --vulnerability-service "${PIP_AUDIT_SERVICE:-pypi}" \
  --cache-dir .cache/pip-audit \
  --format json --output "$report" \
  ${PIP_AUDIT_ARGS:-} 2> "$report.err"
status=$?
set -e
if [ ! -s "$report" ]; then
  cat "$report.err" >&2
  rm -f "$report.err"
  echo "audit: pip-audit failed (exit $status) without a report" >&2
  exit 2
fi
rm -f "$report.err"
"$VENV/bin/python" - "$report" "${AUDIT_REQUIRED:-0}" <<'PY'
import json
import sys

path, required = sys.argv[1], sys.argv[2] == "1"
with open(path, encoding="utf-8") as handle:
    dependencies = json.load(handle)["dependencies"]
audited = [d for d in dependencies if "skip_reason" not in d]
skipped = [d for d in dependencies if "skip_reason" in d]
vulnerable = [d for d in audited if d.get("vulns")]
if not audited:
    print(
        f"audit: none of {len(dependencies)} packages could be audited: the advisory service "
        f"is unreachable from here ({skipped[0]['skip_reason'] if skipped else 'no packages'})",
        file=sys.stderr,
    )
    sys.exit(3 if required else 0)
for dependency in vulnerable:
    for vuln in dependency["vulns"]:
        fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
        print(f"{dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixes})")
print(
    f"audit: {len(audited)} packages audited, {len(vulnerable)} with known vulnerabilities; "
    f"{len(skipped)} skipped"
    + (f" ({', '.join(d['name'] for d in skipped[:10])})" if skipped else "")
)
sys.exit(1 if vulnerable else 0)
PY
