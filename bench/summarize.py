#!/usr/bin/env python3
"""Summarise a tools/bench.sh CSV: markdown tables of medians and ratios, and a gnuplot chart.

usage: summarize.py RESULTS.csv [--png OUT.png] [--md OUT.md] [--note TEXT]

The baseline is mapalloc when every workload has a successful mapalloc run, else glibc (the
tables say which). Ratios are peer / baseline: below 1.00 the peer is faster (or smaller)."""
import csv
import math
import os
import statistics
import subprocess
import sys
from collections import OrderedDict, defaultdict

ORDER = ["glibc", "jemalloc", "mimalloc", "tcmalloc", "mapalloc"]
FRAG_KEYS = ["rss_fill_mib", "rss_free90_mib", "rss_free90_late_mib", "rss_refill_mib",
             "rss_end_mib", "rss_end_late_mib"]


def parse_result(s):
    out = {}
    for tok in (s or "").split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


def fmt_time(s):
    return "%.3f" % s if s < 10 else "%.2f" % s


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    path = args[0]
    png = md = None
    note = ""
    i = 1
    while i < len(args):
        if args[i] == "--png":
            png = args[i + 1]
            i += 2
        elif args[i] == "--md":
            md = args[i + 1]
            i += 2
        elif args[i] == "--note":
            note = args[i + 1]
            i += 2
        else:
            print("summarize.py: unknown argument %s" % args[i], file=sys.stderr)
            return 2

    rows = list(csv.DictReader(open(path)))
    workloads = OrderedDict()
    allocs_seen = set()
    wall = defaultdict(list)
    rss = defaultdict(list)
    extra = defaultdict(list)
    failed = defaultdict(int)
    pending = set()
    micro = defaultdict(list)
    for r in rows:
        w, a = r["workload"], r["alloc"]
        if r["kind"] == "micro":
            if r["status"] == "0":
                micro[w].append(float(r["wall_s"]))
            else:
                failed[(w, a)] += 1
            continue
        workloads.setdefault(w, r["kind"])
        allocs_seen.add(a)
        if r["status"] == "n/a":
            pending.add(a)
            continue
        if r["status"] != "0":
            failed[(w, a)] += 1
            continue
        wall[(w, a)].append(float(r["wall_s"]))
        rss[(w, a)].append(float(r["maxrss_kib"]) / 1024.0)
        extra[(w, a)].append(parse_result(r["result"]))
    allocs = [a for a in ORDER if a in allocs_seen] + sorted(allocs_seen - set(ORDER))
    complete = lambda a: all(wall.get((w, a)) for w in workloads)
    base = "mapalloc" if "mapalloc" in allocs and complete("mapalloc") else "glibc"

    def med(d, w, a):
        v = d.get((w, a))
        return statistics.median(v) if v else None

    lines = []
    say = lines.append
    runs = max((len(v) for v in wall.values()), default=0)
    say("Medians of %d run(s) per cell; ratio = allocator / %s (baseline%s); "
        "below 1.00 is faster or smaller." % (runs, base,
        "" if base == "mapalloc" else ", because mapalloc has no complete result yet"))
    if note:
        say("")
        say(note)
    for title, d, unit, f in (("Wall time (s)", wall, "s", fmt_time),
                              ("Peak RSS (MiB)", rss, "MiB", lambda x: "%.1f" % x)):
        say("")
        say("**%s**" % title)
        say("")
        say("| workload | " + " | ".join(allocs) + " |")
        say("|---|" + "---|" * len(allocs))
        logs = defaultdict(list)
        for w in workloads:
            b = med(d, w, base)
            cells = []
            for a in allocs:
                m = med(d, w, a)
                if a in pending and m is None:
                    cells.append("n/a (no preload library yet)")
                elif m is None:
                    cells.append("FAILED" if failed.get((w, a)) else "-")
                elif b:
                    cells.append("%s (%.2f)" % (f(m), m / b))
                    if m > 0:
                        logs[a].append(math.log(m / b))
                else:
                    cells.append(f(m))
            say("| %s | %s |" % (w, " | ".join(cells)))
        geo = []
        for a in allocs:
            if a in pending:
                geo.append("n/a")
            elif logs[a] and len(logs[a]) == len(workloads):
                geo.append("%.2f" % math.exp(sum(logs[a]) / len(logs[a])))
            elif logs[a]:
                geo.append("%.2f (%d of %d)" % (math.exp(sum(logs[a]) / len(logs[a])),
                                                len(logs[a]), len(workloads)))
            else:
                geo.append("-")
        say("| **geomean ratio** | %s |" % " | ".join(geo))

    if "frag" in workloads:
        say("")
        say("**frag: RSS (MiB) after each phase** (fill 1 GiB of 16-256 B objects (64 MiB in "
            "--quick), free 90% at random, refill, free all; *late* = after a 100 ms pause "
            "and a little allocator traffic)")
        say("")
        say("| allocator | " + " | ".join(k.replace("rss_", "").replace("_mib", "")
                                         for k in FRAG_KEYS) + " |")
        say("|---|" + "---|" * len(FRAG_KEYS))
        for a in allocs:
            ex = extra.get(("frag", a))
            if not ex:
                continue
            vals = []
            for k in FRAG_KEYS:
                xs = [float(e[k]) for e in ex if k in e]
                vals.append("%.0f" % statistics.median(xs) if xs else "-")
            say("| %s | %s |" % (a, " | ".join(vals)))

    flags = []
    for (w, a), ex in sorted(extra.items()):
        bad = max((int(e.get("misaligned", "0")) for e in ex), default=0)
        if bad:
            flags.append("- %s under %s: %d aligned allocations came back misaligned "
                         "(counted, not fatal)." % (w, a, bad))
    for (w, a), n in sorted(failed.items()):
        flags.append("- %s under %s: %d failed run(s) (see the log)." % (w, a, n))
    if flags:
        say("")
        say("**Flags**")
        say("")
        lines.extend(flags)
    if micro:
        say("")
        say("**Micro-benchmarks** (mapalloc's own layers against raw system calls or malloc, no "
            "preload; wall time of one invocation - each repeats internally)")
        say("")
        say("| benchmark | wall (s) |")
        say("|---|---|")
        for w, v in micro.items():
            say("| %s | %s |" % (w, fmt_time(statistics.median(v))))
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if md:
        open(md, "w").write(text)
    if png:
        chart(png, workloads, allocs, pending, base, wall, rss, med)
    return 0


def chart(png, workloads, allocs, pending, base, wall, rss, med):
    dat = png[:-4] + ".dat"
    shown = [a for a in allocs if a not in pending]
    with open(dat, "w") as f:
        for name, d in (("time", wall), ("rss", rss)):
            f.write("# %s\nworkload %s\n" % (name, " ".join(shown)))
            for w in workloads:
                b = med(d, w, base)
                vals = []
                for a in shown:
                    m = med(d, w, a)
                    vals.append("%.4f" % (m / b) if (m is not None and b) else "NaN")
                f.write("%s %s\n" % (w, " ".join(vals)))
            f.write("\n\n")
    n = len(shown)
    title_base = base if base == "mapalloc" else "glibc (mapalloc: n/a, no preload library yet)"
    gp = """set terminal pngcairo size 1500,1000 font ",10"
set output '%(png)s'
set datafile missing 'NaN'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key outside right top vertical
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5
set xtics rotate by -35
set multiplot layout 2,1 title 'mapalloc benchmark suite: medians relative to %(tb)s (lower is better)'
set ylabel 'wall time / baseline'
set logscale y 2
set title 'Relative wall time'
plot for [i=2:%(last)d] '%(dat)s' index 0 using i:xtic(1) title columnheader(i)
set ylabel 'peak RSS / baseline'
set title 'Relative peak RSS'
plot for [i=2:%(last)d] '%(dat)s' index 1 using i:xtic(1) title columnheader(i)
unset multiplot
""" % {"png": png, "dat": dat, "last": n + 1, "tb": title_base}
    gpf = png[:-4] + ".gp"
    open(gpf, "w").write(gp)
    r = subprocess.run(["gnuplot", gpf], capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write("summarize.py: gnuplot failed:\n" + r.stderr)
        raise SystemExit(1)
    os.remove(gpf)
    os.remove(dat)


if __name__ == "__main__":
    sys.exit(main())
