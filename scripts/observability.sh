#!/usr/bin/env bash
# `make observability`: the Prometheus alert rules and the Grafana dashboard of deploy/observability,
# checked with promtool (Debian's `prometheus` package; the Makefile installs it when missing):
#   - promtool check rules: the alert rules parse and their templates render;
#   - promtool test rules: the unit tests in prometheus-alerts.test.yaml pass;
#   - every dashboard query parses: each becomes a recording rule (Grafana's $__rate_interval and
#     $__interval read as 5m and 1m) in a temporary file that promtool checks.
# That every metric they name is one Envoy really exposes is checked end to end
# (tests/harness/tests/observability.rs, part of `make e2e`).
set -euo pipefail
cd "$(dirname "$0")/../deploy/observability"
PROMTOOL=${PROMTOOL:-promtool}
"$PROMTOOL" --version | head -n 1
"$PROMTOOL" check rules prometheus-alerts.yaml
"$PROMTOOL" test rules prometheus-alerts.test.yaml
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - grafana-dashboard.json "$tmp/dashboard-rules.yaml" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
exprs = []
def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            exprs.append((p.get("title", ""), t["expr"]))
        walk(p.get("panels", []))
walk(dash["panels"])
if not exprs:
    sys.exit("no queries found in the dashboard")
with open(sys.argv[2], "w") as out:
    out.write("groups:\n- name: dashboard\n  rules:\n")
    for i, (title, e) in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$__interval", "1m")
        if "$" in e:
            sys.exit(f"panel {title!r}: an unknown Grafana variable in {e!r}")
        out.write(f"  - record: dashboard:query_{i}\n    expr: {json.dumps(e)}\n")
print(f"{len(exprs)} dashboard queries")
PY
"$PROMTOOL" check rules "$tmp/dashboard-rules.yaml"
