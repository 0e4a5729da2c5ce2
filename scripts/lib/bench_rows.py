"""The rows of `scripts/bench`'s one table. Each bench script measures on its own and, when
BENCH_ROWS names a file, appends one JSON line per figure: what was measured, against which
baseline measured in the same run, and the goal for the ratio (figure / baseline) if there is one.
"""
import json
import os


def row(section, what, seconds, baseline, baseline_seconds, goal=None, note="", unit="s"):
    """goal: the largest ratio that meets it (e.g. 1.3 for "at most 1.3x the baseline", 0.1 for
    "at least 10x faster than the baseline"), or None. unit: "s" (seconds) or "MB"."""
    path = os.environ.get("BENCH_ROWS")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"section": section, "what": what, "seconds": seconds, "baseline": baseline,
                            "baseline_seconds": baseline_seconds, "goal": goal, "note": note, "unit": unit}) + "\n")


def table(path):
    """Print the rows in `path` as one table."""
    rows = [json.loads(line) for line in open(path) if line.strip()]
    width = max((len(r["what"]) for r in rows), default=10)
    base_width = max((len(r["baseline"]) for r in rows), default=10)
    print(f"{'measured':{width}}  {'figure':>10}  {'baseline (same run)':{base_width}}  {'baseline':>10}  {'ratio':>7}  goal")
    section = None
    for r in rows:
        if r["section"] != section:
            section = r["section"]
            print(f"-- {section}")
        ratio = r["seconds"] / r["baseline_seconds"] if r["baseline_seconds"] else float("nan")
        goal = ""
        if r["goal"] is not None:
            met = "met" if ratio <= r["goal"] else "NOT met"
            goal = f"<= {r['goal']:g}x: {met}"
        line = f"{r['what']:{width}}  {shown(r['seconds'], r):>10}  {r['baseline']:{base_width}}  {shown(r['baseline_seconds'], r):>10}  {ratio:6.2f}x  {goal}"
        if r["note"]:
            line += f"  ({r['note']})"
        print(line.rstrip())


def shown(value, r):
    if r.get("unit") == "MB":
        return f"{value:.1f} MB"
    return ms(value)


def ms(seconds):
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 0.01:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds * 1e3:.2f} ms"
