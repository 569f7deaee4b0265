#!/usr/bin/env python3
"""Summarise a tools/bench.sh CSV: markdown tables of medians and ratios, and a gnuplot chart.

usage: summarize.py RESULTS.csv [--png OUT.png] [--md OUT.md] [--note TEXT]
                    [--series IDLE.csv --series-png OUT-idle.png]

The baseline is mapalloc when every workload has a successful mapalloc run, else glibc (the
tables say which). Ratios are peer / baseline: below 1.00 the peer is faster (or smaller).
Each table row also names the best peer (the fastest or smallest allocator other than
mapalloc) and mapalloc / best peer; then come the geomeans of mapalloc / each peer, the
workloads where mapalloc is slower than 1.25x the best peer, issue 10's goals, the remote-free
pair and the idle-worker RSS phases. A workload whose RESULT line carries timed_s (idle: its
wall time is mostly deliberate sleeping) is timed by that instead of the process wall time.
--series plots RSS over time (the idle workload's samples, median per sample over the runs)
for every allocator."""
import csv
import math
import os
import statistics
import subprocess
import sys
from collections import OrderedDict, defaultdict

ORDER = ["glibc", "jemalloc", "mimalloc", "tcmalloc", "mapalloc"]
MAPALLOC = ("mapalloc", "mapalloc-secure")
SLOW = 1.25  # issue 10: no workload slower than 1.25x the best peer
IDLE_KEYS = ["rss_start_mib", "rss_alloc_mib", "rss_freed_mib", "rss_1s_mib",
             "rss_idle_end_mib", "rss_trim_mib", "rss_trim_late_mib"]
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
    png = md = series = series_png = None
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
        elif args[i] == "--series":
            series = args[i + 1]
            i += 2
        elif args[i] == "--series-png":
            series_png = args[i + 1]
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
        res = parse_result(r["result"])
        wall[(w, a)].append(float(res["timed_s"]) if "timed_s" in res else float(r["wall_s"]))
        rss[(w, a)].append(float(r["maxrss_kib"]) / 1024.0)
        extra[(w, a)].append(res)
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
        peers = [a for a in allocs if a not in MAPALLOC and a not in pending]
        best_cols = base == "mapalloc" and bool(peers)
        say("| workload | " + " | ".join(allocs) + (" | best peer | mapalloc/best |"
                                                   if best_cols else " |"))
        say("|---|" + "---|" * (len(allocs) + (2 if best_cols else 0)))
        logs = defaultdict(list)
        for w in workloads:
            b = med(d, w, base)
            cells = []
            if best_cols:
                bp = best_peer(d, w, peers, med)
                bcell = "%s %s" % (bp[0], f(bp[1])) if bp else "-"
                rcell = "%.2f" % (b / bp[1]) if (bp and b and bp[1] > 0) else "-"
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
            if best_cols:
                cells += [bcell, "**%s**" % rcell if rcell != "-" and float(rcell) > SLOW
                          else rcell]
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
        if best_cols:
            geo += ["", "%.2f" % geomean([med(d, w, base) / best_peer(d, w, peers, med)[1]
                                          for w in workloads
                                          if med(d, w, base) and best_peer(d, w, peers, med)
                                          and best_peer(d, w, peers, med)[1] > 0])]
        say("| **geomean ratio** | %s |" % " | ".join(geo))

    if base == "mapalloc":
        against_peers(say, workloads, allocs, pending, wall, rss, med)
        goals(say, workloads, allocs, pending, wall, rss, extra, med)
    remote_pair(say, workloads, allocs, extra)
    idle_phases(say, workloads, allocs, extra)

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
    if series and series_png:
        series_chart(series, series_png, allocs)
    return 0


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def best_peer(d, w, peers, med):
    """(name, median) of the peer with the lowest median on w, or None."""
    got = [(med(d, w, a), a) for a in peers if med(d, w, a) is not None]
    if not got:
        return None
    m, a = min(got)
    return a, m


def against_peers(say, workloads, allocs, pending, wall, rss, med):
    peers = [a for a in allocs if a not in MAPALLOC and a not in pending]
    if not peers:
        return
    say("")
    say("**mapalloc against each peer** (geomean over the workloads both completed of "
        "mapalloc's median / the peer's; below 1.00 mapalloc is faster or smaller)")
    say("")
    say("| peer | time | peak RSS | workloads |")
    say("|---|---|---|---|")
    for p in peers + ["best peer"]:
        tr, rr = [], []
        for w in workloads:
            for d, out in ((wall, tr), (rss, rr)):
                m = med(d, w, "mapalloc")
                if p == "best peer":
                    bp = best_peer(d, w, peers, med)
                    o = bp[1] if bp else None
                else:
                    o = med(d, w, p)
                if m and o:
                    out.append(m / o)
        say("| %s | %.2fx | %.2fx | %d |" % (p, geomean(tr), geomean(rr), len(tr)))
    slow = []
    for w in workloads:
        m, bp = med(wall, w, "mapalloc"), best_peer(wall, w, peers, med)
        if m and bp and bp[1] > 0 and m / bp[1] > SLOW:
            slow.append((m / bp[1], w, bp[0]))
    slow.sort(reverse=True)
    say("")
    say("**Slower than %.2fx the best peer**: %d of %d workloads%s" % (
        SLOW, len(slow), len(workloads), (": " + ", ".join(
            "%s %.2fx (%s)" % (w, r, a) for r, w, a in slow)) if slow else ""))


def goals(say, workloads, allocs, pending, wall, rss, extra, med):
    """Issue 10's goals, each with its measured value: met, missed or not measured."""
    rows = []

    def geo_vs(d, peer):
        return geomean([med(d, w, "mapalloc") / med(d, w, peer) for w in workloads
                        if med(d, w, "mapalloc") and med(d, w, peer)])

    for peer, limit in (("mimalloc", 0.85), ("tcmalloc", 0.85), ("jemalloc", 0.75)):
        if peer in allocs and peer not in pending:
            g = geo_vs(wall, peer)
            rows.append(("time geomean <= %.2fx %s" % (limit, peer), "%.2fx" % g, g <= limit))
    peers = [a for a in allocs if a not in MAPALLOC and a not in pending]
    if peers:
        worst = max(((med(wall, w, "mapalloc") / best_peer(wall, w, peers, med)[1], w)
                     for w in workloads if med(wall, w, "mapalloc")
                     and best_peer(wall, w, peers, med)), default=None)
        if worst:
            rows.append(("no workload slower than %.2fx the best peer" % SLOW,
                         "worst %s %.2fx" % (worst[1], worst[0]), worst[0] <= SLOW))
    if "tcmalloc" in allocs:
        srv = [w for w in workloads if w.startswith("server-")]
        got = [(med(wall, w, "mapalloc") / med(wall, w, "tcmalloc"), w) for w in srv
               if med(wall, w, "mapalloc") and med(wall, w, "tcmalloc")]
        if got:
            worst = max(got)
            rows.append(("server pattern no slower than tcmalloc",
                         ", ".join("%s %.2fx" % (w, r) for r, w in got), worst[0] <= 1.0))
    if "jemalloc" in allocs and "jemalloc" not in pending:
        g = geo_vs(rss, "jemalloc")
        rows.append(("peak RSS geomean <= jemalloc's", "%.2fx" % g, g <= 1.0))
    pair = remote_ns(workloads, extra, "mapalloc")
    if pair:
        (lo, a), (hi, b) = pair[0], pair[-1]
        rows.append(("remote-free cost flat: %s vs %s within 1.2x" % (lo, hi),
                     "%.1f / %.1f ns = %.2fx" % (b, a, b / a), b / a <= 1.2))
    ex = extra.get(("idle", "mapalloc"))
    if ex:
        def mid(k):
            xs = [float(e[k]) for e in ex if k in e]
            return statistics.median(xs) if xs else float("nan")
        d1 = mid("rss_1s_mib") - mid("rss_start_mib")
        dt = mid("rss_trim_mib") - mid("rss_start_mib")
        rows.append(("idle worker: RSS within 10 MiB of the start 1 s after the frees",
                     "+%.1f MiB" % d1, d1 <= 10))
        rows.append(("idle worker: at once after malloc_trim(0) from another thread",
                     "+%.1f MiB" % dt, dt <= 10))
    if "glibc" in allocs:
        m, g = med(wall, "threads-32", "mapalloc"), med(wall, "threads-32", "glibc")
        if m and g:
            rows.append(("threads-32 no slower than glibc", "%.2fx" % (m / g), m <= g))
    if not rows:
        return
    say("")
    say("**Issue 10's goals** (this run)")
    say("")
    say("| goal | measured | |")
    say("|---|---|---|")
    for g, v, ok in rows:
        say("| %s | %s | %s |" % (g, v, "met" if ok else "**missed**"))


def remote_ns(workloads, extra, a):
    """[(workload, median ns per remote free)] of the remote-* points, by live heap size."""
    out = []
    for w in workloads:
        if not w.startswith("remote-"):
            continue
        ex = extra.get((w, a)) or []
        xs = [float(e["ns_per_remote_free"]) for e in ex if "ns_per_remote_free" in e]
        ls = [float(e.get("live_mib", "0")) for e in ex]
        if xs:
            out.append((max(ls), w, statistics.median(xs)))
    out.sort()
    return [(w, v) for _, w, v in out]


def remote_pair(say, workloads, allocs, extra):
    rws = [w for w in workloads if w.startswith("remote-")]
    if not rws:
        return
    say("")
    say("**Remote-free cost against heap size** (ns per block: the owner allocates, another "
        "thread frees, the owner reuses; median; last column = largest heap / smallest)")
    say("")
    cols = sorted(rws, key=lambda w: max([float(e.get("live_mib", "0"))
                                          for a in allocs for e in extra.get((w, a), [])]
                                         or [0]))
    say("| allocator | " + " | ".join("%s ns (free ns)" % w for w in cols) + " | ratio |")
    say("|---|" + "---|" * (len(cols) + 1))
    for a in allocs:
        cells, vals = [], []
        for w in cols:
            ex = extra.get((w, a)) or []
            xs = [float(e["ns_per_remote_free"]) for e in ex if "ns_per_remote_free" in e]
            fs = [float(e["free_ns"]) for e in ex if "free_ns" in e]
            if xs:
                v = statistics.median(xs)
                vals.append(v)
                cells.append("%.1f (%.1f)" % (v, statistics.median(fs)))
            else:
                vals.append(None)
                cells.append("-")
        ratio = ("%.2fx" % (vals[-1] / vals[0]) if len(vals) > 1 and vals[0] and vals[-1]
                 else "-")
        say("| %s | %s | %s |" % (a, " | ".join(cells), ratio))
    lives = sorted({e.get("live_mib") for w in cols for a in allocs
                    for e in extra.get((w, a), []) if "live_mib" in e}, key=float)
    if lives:
        say("")
        say("Live heap per thread (MiB): %s." % ", ".join(lives))


def idle_phases(say, workloads, allocs, extra):
    if "idle" not in workloads:
        return
    say("")
    say("**idle: RSS (MiB) of the idle-worker scenario** (a worker allocates MiB of 256 B "
        "blocks, main frees every other one, the worker the rest and then blocks; *1s* = 1 s "
        "after the frees with no allocator call; *trim* = right after malloc_trim(0) from "
        "main, *trim_late* = 100 ms later)")
    say("")
    say("| allocator | " + " | ".join(k.replace("rss_", "").replace("_mib", "")
                                     for k in IDLE_KEYS) + " |")
    say("|---|" + "---|" * len(IDLE_KEYS))
    for a in allocs:
        ex = extra.get(("idle", a))
        if not ex:
            continue
        vals = []
        for k in IDLE_KEYS:
            xs = [float(e[k]) for e in ex if k in e]
            vals.append("%.1f" % statistics.median(xs) if xs else "-")
        say("| %s | %s |" % (a, " | ".join(vals)))


def series_chart(path, png, allocs):
    """RSS over time of the idle workload: the median over the runs of each sample."""
    pts = defaultdict(lambda: defaultdict(list))  # alloc -> sample index -> [(t, rss)]
    idx = defaultdict(int)
    last = None
    for r in csv.DictReader(open(path)):
        key = (r["alloc"], r["run"])
        if key != last:
            idx.clear()
            last = key
        # Samples are keyed by phase and order, so that runs line up sample by sample.
        k = (r["phase"], idx[r["phase"]])
        idx[r["phase"]] += 1
        pts[r["alloc"]][k].append((float(r["t_s"]), float(r["rss_mib"])))
    shown = [a for a in allocs if a in pts] + sorted(set(pts) - set(allocs))
    if not shown:
        return
    dat = png[:-4] + ".dat"
    with open(dat, "w") as f:
        for a in shown:
            f.write("# %s\n" % a)
            rows = [(statistics.median(t for t, _ in v), statistics.median(m for _, m in v))
                    for v in pts[a].values()]
            for t, m in sorted(rows):
                f.write("%.3f %.2f\n" % (t, m))
            f.write("\n\n")
    colour = {"glibc": "#9400d3", "jemalloc": "#009e73", "mimalloc": "#56b4e9",
              "tcmalloc": "#e69f00", "mapalloc": "#d00000", "mapalloc-secure": "#800000"}
    plots = ", ".join("'%s' index %d using 1:2 with linespoints pt 7 ps 0.5 lw %d lc rgb '%s' "
                      "title '%s'" % (dat, i, 3 if a in MAPALLOC else 2,
                                      colour.get(a, "#404040"), a)
                      for i, a in enumerate(shown))
    trims = [t for a in shown for (ph, _), v in pts[a].items() if ph == "trim" for t, _ in v]
    mark = ""
    if trims:
        t = statistics.median(trims)
        mark = ("set arrow 1 from %.3f, graph 0 to %.3f, graph 1 nohead dt 2 lc rgb '#606060'\n"
                "set label 1 'malloc_trim(0) from main' at %.3f, graph 0.05 right offset -0.5,0\n"
                % (t, t, t))
    gp = """set terminal pngcairo size 1200,700 font ",11"
set output '%(png)s'
set termoption noenhanced
set title "idle worker: RSS over time (0 = the worker's last free; no allocator call from anyone until malloc_trim(0))"
set xlabel 'seconds since the frees ended (negative: allocation and frees)'
set ylabel 'RSS (MiB)'
set grid
set key outside right top vertical
set yrange [0:*]
%(mark)splot %(plots)s
""" % {"png": png, "plots": plots, "mark": mark}
    gpf = png[:-4] + ".gp"
    open(gpf, "w").write(gp)
    r = subprocess.run(["gnuplot", gpf], capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write("summarize.py: gnuplot failed:\n" + r.stderr)
        raise SystemExit(1)
    os.remove(gpf)
    os.remove(dat)


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
    gp = """set terminal pngcairo size %(w)d,1000 font ",10"
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
""" % {"png": png, "dat": dat, "last": n + 1, "tb": title_base,
       "w": max(1500, 60 * len(workloads) + 300)}
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
