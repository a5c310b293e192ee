#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Check a Grafana dashboard JSON (manifests/dashboards/*.json) against what ztunnel serves.

  check_grafana.py DASHBOARD.json [--metrics FILE]... [--promtool PROMTOOL]
                   [--prometheus URL]

Always: the file is JSON with Grafana's dashboard shape (uid, title, unique panel ids,
gridPos inside 24 columns, every target with an expr and a refId unique in its panel).
--metrics FILE (Prometheus text, e.g. ztunnel's /metrics; '-' for stdin, repeatable): every
metric name any query references is exposed, and every label a query matches or groups on is
a label of those metrics (or a target label: instance, job).
--promtool: every query parses as PromQL (as a recording rule checked by `promtool check
rules`), with Grafana's variables replaced.
--prometheus URL: every query evaluates without error on that server and the ones listed in
--nonempty return data.
Exit 0 when everything holds; otherwise each problem is printed and the exit status is 1.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

FUNCS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil",
    "changes", "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values",
    "delta", "deriv", "exp", "floor", "group", "histogram_quantile", "idelta", "increase",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log2", "log10", "max",
    "max_over_time", "min", "min_over_time", "predict_linear", "quantile",
    "quantile_over_time", "rate", "resets", "round", "scalar", "sort", "sort_desc", "sqrt",
    "stddev", "stddev_over_time", "stdvar", "sum", "sum_over_time", "time", "timestamp",
    "topk", "vector", "label_values",
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}
TARGET_LABELS = {"instance", "job"}
IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
VARS = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}

problems = []


def problem(msg):
    problems.append(msg)
    print("FAIL: " + msg, file=sys.stderr)


def substitute(expr):
    """Grafana's variables -> values PromQL accepts ("$instance" in a regex matcher -> .*)."""
    for k, v in VARS.items():
        expr = expr.replace(k, v)
    return re.sub(r"\$\{?[a-zA-Z_]\w*\}?", ".*", expr)


def metric_names(expr):
    """Metric names a PromQL expression selects (not functions, keywords or labels)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', substitute(expr))  # strings
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(IDENT, e):
        word, rest = m.group(0), e[m.end():].lstrip()
        if rest.startswith("(") or word in KEYWORDS or word in FUNCS:
            continue
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue  # the exponent or tail of a number
        names.add(word)
    return names


def label_names(expr):
    """Labels a PromQL expression matches on ({l="..."}) or groups by (by/on (...))."""
    e = substitute(expr)
    labels = set()
    for m in re.finditer(r"\{([^}]*)\}", e):
        for lm in re.finditer(r"(" + IDENT + r")\s*(=~|!~|!=|=)", m.group(1)):
            labels.add(lm.group(1))
    for m in re.finditer(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)", e):
        labels.update(x.strip() for x in m.group(2).split(",") if x.strip())
    labels.discard("__name__")
    return labels


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def queries(dash):
    """(where, expr) for every panel target and every query variable."""
    for p in walk_panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            yield "panel %r target %s" % (p.get("title"), t.get("refId")), t.get("expr", "")
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.match(r"\s*label_values\((.*),\s*(" + IDENT + r")\s*\)\s*$", q or "")
            if not m:
                problem("variable %r: query %r is not label_values(SELECTOR, LABEL)" % (v.get("name"), q))
                continue
            yield "variable %r" % v.get("name"), m.group(1)


def check_shape(dash):
    for k in ("uid", "title", "panels", "schemaVersion"):
        if k not in dash:
            problem("dashboard has no %r" % k)
    ids = set()
    for p in walk_panels(dash.get("panels", [])):
        pid, title = p.get("id"), p.get("title")
        if not isinstance(pid, int) or pid in ids:
            problem("panel %r: id %r missing or not unique" % (title, pid))
        ids.add(pid)
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "xywh") or g["x"] + g["w"] > 24:
            problem("panel %r: gridPos %r is not inside 24 columns" % (title, g))
        if p.get("type") == "row":
            continue
        targets = p.get("targets", [])
        if not targets:
            problem("panel %r has no queries" % title)
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            problem("panel %r: refIds %r are not unique" % (title, refs))
        for t in targets:
            if not t.get("expr"):
                problem("panel %r target %s has no expr" % (title, t.get("refId")))
            ds = t.get("datasource", p.get("datasource")) or {}
            if ds.get("uid") != "${datasource}":
                problem("panel %r target %s does not use the ${datasource} variable" % (title, t.get("refId")))
    if not any(v.get("name") == "datasource" for v in dash.get("templating", {}).get("list", [])):
        problem("no 'datasource' variable")


def parse_exposition(text):
    """{metric name: set of label names} from Prometheus text format (sample lines)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(" + IDENT + r")(\{(.*)\})?\s", line)
        if not m:
            problem("unparsable exposition line: %r" % line)
            continue
        labels = set(re.findall(r"(" + IDENT + r")=\"", m.group(3) or ""))
        out.setdefault(m.group(1), set()).update(labels)
    return out


def check_metrics(dash, exposed):
    for where, expr in queries(dash):
        names = metric_names(expr)
        if not names:
            problem("%s: no metric in %r" % (where, expr))
        known = set(TARGET_LABELS)
        for n in sorted(names):
            if n not in exposed:
                problem("%s: metric %s is not exposed by ztunnel" % (where, n))
            else:
                known |= exposed[n]
        for lab in sorted(label_names(expr) - known):
            problem("%s: label %r is not a label of %s" % (where, lab, ", ".join(sorted(names))))


def check_promtool(dash, promtool):
    groups = [{"name": "dashboard", "rules": [
        {"record": "dashboard:q%d" % i, "expr": substitute(expr)}
        for i, (_, expr) in enumerate(queries(dash))]}]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump({"groups": groups}, f)  # YAML is a superset of JSON
        path = f.name
    try:
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        problem("promtool check rules: %s%s" % (r.stdout, r.stderr))


def check_prometheus(dash, url, nonempty):
    for where, expr in queries(dash):
        q = substitute(expr)
        qs = urllib.parse.urlencode({"query": q})
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/api/v1/query?" + qs, timeout=10) as r:
                res = json.load(r)
        except Exception as e:  # HTTP 400 carries PromQL errors
            body = e.read().decode() if hasattr(e, "read") else ""
            problem("%s: query %r failed: %s %s" % (where, q, e, body))
            continue
        if res.get("status") != "success":
            problem("%s: query %r: %s" % (where, q, res))
            continue
        n = len(res["data"]["result"])
        if any(s in expr for s in nonempty) and n == 0:
            problem("%s: query %r returned no data" % (where, q))
        print("ok: %s: %d series" % (where, n))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dashboard")
    ap.add_argument("--metrics", action="append", default=[])
    ap.add_argument("--promtool")
    ap.add_argument("--prometheus")
    ap.add_argument("--nonempty", action="append", default=[],
                    help="queries containing this text must return data (--prometheus)")
    a = ap.parse_args()
    try:
        with open(a.dashboard) as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        print("FAIL: %s: %s" % (a.dashboard, e), file=sys.stderr)
        return 1
    check_shape(dash)
    nq = len(list(queries(dash)))
    if a.metrics:
        exposed = {}
        for m in a.metrics:
            text = sys.stdin.read() if m == "-" else open(m).read()
            for k, v in parse_exposition(text).items():
                exposed.setdefault(k, set()).update(v)
        check_metrics(dash, exposed)
    if a.promtool:
        check_promtool(dash, a.promtool)
    if a.prometheus:
        check_prometheus(dash, a.prometheus, a.nonempty)
    if problems:
        print("%d problem(s) in %s" % (len(problems), a.dashboard), file=sys.stderr)
        return 1
    print("ok: %s: %d queries checked" % (a.dashboard, nq))
    return 0


if __name__ == "__main__":
    sys.exit(main())
