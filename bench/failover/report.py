#!/usr/bin/python3
"""bench/failover: results.jsonl (one line per run, written by run.sh) -> the markdown
tables of RESULTS.md: every run, then per side and scenario min/median/max, then igw next to
the stock setup with ratios."""

import json
import statistics
import sys
from collections import defaultdict


def fmt_ms(v):
    return "-" if v is None else f"{v:.0f}"


def other(node):
    return {"igw-a": "igw-b", "igw-b": "igw-a"}.get(node, "?")


def main():
    runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    groups = defaultdict(list)
    for r in runs:
        groups[(r["scenario"], r["ct_entries"], r["side"])].append(r)

    print("## Per side and scenario (min / median / max over the runs)\n")
    print("| scenario | conntrack entries | side | runs (switched) | outage ms | lost probes (median) "
          "| flows alive at the end (worst run) | longest flow stall ms (median) "
          "| un-NATed packets at the upstream (max) | promotion commit ms (median; stock `conntrackd -c`, igw conntrack-sync) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for (sc, ct, side), rs in sorted(groups.items()):
        out = sorted(r["outage_ms"] for r in rs)
        s = {
            "runs": len(rs),
            "min": out[0], "med": statistics.median(out), "max": out[-1],
            "lost": statistics.median(r["lost"] for r in rs),
            "alive": min(r["alive"] for r in rs), "flows": rs[0]["flows"],
            "stall": statistics.median(r["max_stall_ms"] for r in rs),
            "unnat": max(r["unnat"] for r in rs),
            "switched": sum(1 for r in rs if r.get("active_after") == other(r["failed_node"])),
        }
        commits = [r["commit_ms"] for r in rs if r.get("commit_ms") is not None]
        s["commit"] = statistics.median(commits) if commits else None
        summary[(sc, ct, side)] = s
        print(f"| {sc} | {ct} | {side} | {s['runs']} ({s['switched']}) | {fmt_ms(s['min'])} / {fmt_ms(s['med'])} / "
              f"{fmt_ms(s['max'])} | {s['lost']:.0f} | {s['alive']}/{s['flows']} | "
              f"{s['stall']:.0f} | {s['unnat']} | {fmt_ms(s['commit'])} |")

    print("\n## igw next to the stock setup (medians; ratio = stock / igw outage)\n")
    print("| scenario | conntrack entries | stock outage ms | igw outage ms | ratio "
          "| stock flows alive | igw flows alive | stock un-NATed | igw un-NATed |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(sc, ct) for (sc, ct, _) in summary})
    for sc, ct in keys:
        st, ig = summary.get((sc, ct, "stock")), summary.get((sc, ct, "igw"))

        def g(s, k, f=str):
            return "n/a" if s is None else f(s[k])

        if st and ig:
            ratio = "no loss either side" if ig["med"] == 0 and st["med"] == 0 else (
                f"{st['med'] / ig['med']:.1f}x" if ig["med"] > 0 else "igw lost nothing")
        else:
            ratio = "n/a"
        print(f"| {sc} | {ct} | {g(st, 'med', fmt_ms)} | {g(ig, 'med', fmt_ms)} | {ratio} | "
              f"{'n/a' if st is None else str(st['alive']) + '/' + str(st['flows'])} | "
              f"{'n/a' if ig is None else str(ig['alive']) + '/' + str(ig['flows'])} | "
              f"{g(st, 'unnat')} | {g(ig, 'unnat')} |")

    print("\n## Every run\n")
    print("| side | scenario | conntrack entries | run | active before -> after | probes sent | lost "
          "| outage ms | flows alive | longest stall ms | un-NATed | first flow errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        errs = "; ".join(r["flow_errors"]) or "-"
        print(f"| {r['side']} | {r['scenario']} | {r['ct_entries']} | {r['run']} | {r['failed_node']} -> {r['active_after']} "
              f"| {r['sent']} | {r['lost']} | {fmt_ms(r['outage_ms'])} | {r['alive']}/{r['flows']} "
              f"| {r['max_stall_ms']} | {r['unnat']} | {errs} |")


if __name__ == "__main__":
    main()
