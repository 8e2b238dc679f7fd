#!/usr/bin/env python3
"""Tables of medians from the raw client outputs of benches/http/run.sh.

usage: report.py RAW_DIR SETTINGS_FILE OUT_MD OUT_JSON

RAW_DIR holds one file per measurement, named ROUND__VARIANT__CLIENT__CONC.txt (CLIENT is
wrk, ab or stall; a / in VARIANT is written +), each the client's own output. Prints the tables (markdown) and writes
them, with every parsed number, to OUT_MD and OUT_JSON.
"""
import json
import os
import re
import statistics
import sys

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_wrk(text):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if m:
        r["max_ms"] = ms(m.group(3))
    for p in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % p, text, re.M)
        if m:
            r["p%s_ms" % p] = ms(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    r["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["errors"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    return r


def parse_ab(text):
    r = {}
    m = re.search(r"Requests per second:\s+([\d.]+)", text)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"Complete requests:\s+(\d+)", text)
    r["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Failed requests:\s+(\d+)", text)
    r["errors"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx responses:\s+(\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    for p in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+(\d+)" % p, text, re.M)
        if m:
            r["p%s_ms" % p] = float(m.group(1))
    m = re.search(r"100%\s+(\d+)", text)
    if m:
        r["max_ms"] = float(m.group(1))
    return r


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_rps(x):
    return "—" if x is None else ("%.1f k" % (x / 1e3))


def fmt_ms(x):
    return "—" if x is None else ("%.2f" % x if x < 10 else "%.0f" % x)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(r):
    return "—" if r is None else "%.2f×" % r


def main():
    raw, settings_file, out_md, out_json = sys.argv[1:5]
    runs = []
    for name in sorted(os.listdir(raw)):
        if not name.endswith(".txt"):
            continue
        rnd, variant, client, conc = name[:-4].split("__")
        variant = variant.replace("+", "/")
        text = open(os.path.join(raw, name), errors="replace").read()
        r = parse_ab(text) if client == "ab" else parse_wrk(text)
        r.update(round=int(rnd), variant=variant, client=client, conc=int(conc))
        runs.append(r)

    variants = []
    for r in runs:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    order = ["kevent-threads", "kevent-procs", "epoll-reuseport", "epoll-exclusive", "tokio", "nginx"]
    variants.sort(key=lambda v: (order.index(v.split("/")[0]) if v.split("/")[0] in order
                                 else len(order), v))
    cells = sorted({(r["client"], r["conc"]) for r in runs if r["client"] != "stall"},
                   key=lambda c: (c[0] != "wrk", c[1]))

    def med(variant, client, conc, key):
        return median([r.get(key) for r in runs
                       if r["variant"] == variant and r["client"] == client and r["conc"] == conc])

    def count(variant, client, conc, key):
        return sum(r.get(key) or 0 for r in runs
                   if r["variant"] == variant and r["client"] == client and r["conc"] == conc)

    out = []
    out.append(open(settings_file).read().rstrip() + "\n")
    rounds = max((r["round"] for r in runs), default=0)
    out.append("Requests per second, median of %d rotated round(s) (higher is better):\n" % rounds)
    head = "| variant | " + " | ".join("%s %d" % c for c in cells) + " |"
    out.append(head)
    out.append("|---" * (len(cells) + 1) + "|")
    for v in variants:
        out.append("| %s | " % v + " | ".join(fmt_rps(med(v, c[0], c[1], "rps")) for c in cells) + " |")
    epolls = [v for v in variants if v.startswith("epoll")]
    summary = {}
    for k in [v for v in variants if v.startswith("kevent")]:
        row = []
        for c in cells:
            mine = med(k, c[0], c[1], "rps")
            best = max((med(e, c[0], c[1], "rps") or 0 for e in epolls), default=None)
            row.append(ratio(mine, best))
            summary.setdefault(k, {})["%s %d vs best epoll" % c] = ratio(mine, best)
            for rival in ("tokio", "nginx"):
                if rival in variants:
                    summary[k]["%s %d vs %s" % (c + (rival,))] = ratio(mine, med(rival, c[0], c[1], "rps"))
        out.append("| %s ÷ best epoll | " % k + " | ".join(fmt_ratio(x) for x in row) + " |")
        for rival in ("tokio", "nginx"):
            if rival in variants:
                out.append("| %s ÷ %s | " % (k, rival) + " | ".join(
                    fmt_ratio(ratio(med(k, c[0], c[1], "rps"), med(rival, c[0], c[1], "rps")))
                    for c in cells) + " |")
    out.append("")
    out.append("wrk latency, median over rounds of each run's p50 / p99 / max, ms:\n")
    wrk_cells = [c for c in cells if c[0] == "wrk"]
    out.append("| variant | " + " | ".join("wrk %d" % c[1] for c in wrk_cells) + " |")
    out.append("|---" * (len(wrk_cells) + 1) + "|")
    for v in variants:
        out.append("| %s | " % v + " | ".join(
            "%s / %s / %s" % tuple(fmt_ms(med(v, c[0], c[1], k)) for k in ("p50_ms", "p99_ms", "max_ms"))
            for c in wrk_cells) + " |")
    out.append("")
    errs = []
    for v in variants:
        for c in cells:
            e, n = count(v, c[0], c[1], "errors"), count(v, c[0], c[1], "non2xx")
            if e or n:
                errs.append("%s %s %d: %d socket errors/failed, %d non-2xx (sum over rounds)" % (v, c[0], c[1], e, n))
    out.append("Client-reported errors: " + ("none." if not errs else "\n- " + "\n- ".join(errs)))
    out.append("")

    stall = [r for r in runs if r["client"] == "stall"]
    if stall:
        sv = [v for v in variants if any(r["variant"] == v for r in stall)]
        conc = stall[0]["conc"]
        srounds = max(r["round"] for r in stall)
        out.append("Stalled worker (worker 0 stopped 200 ms every second), wrk --latency at %d "
                   "connections, median of %d round(s):\n" % (conc, srounds))
        out.append("| variant | req/s | p50 ms | p99 ms | max ms | p99 ÷ epoll-reuseport |")
        out.append("|---|---|---|---|---|---|")
        base = med("epoll-reuseport", "stall", conc, "p99_ms")
        for v in sv:
            p99 = med(v, "stall", conc, "p99_ms")
            out.append("| %s | %s | %s | %s | %s | %s |" % (
                v, fmt_rps(med(v, "stall", conc, "rps")), fmt_ms(med(v, "stall", conc, "p50_ms")),
                fmt_ms(p99), fmt_ms(med(v, "stall", conc, "max_ms")), fmt_ratio(ratio(p99, base))))
            summary.setdefault("stall", {})[v] = ratio(p99, base)
        out.append("")

    text = "\n".join(out)
    print(text)
    open(out_md, "w").write(text + "\n")
    json.dump({"runs": runs, "ratios": summary}, open(out_json, "w"), indent=1)


if __name__ == "__main__":
    main()
