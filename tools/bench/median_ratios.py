"""Median per stage over repeated runs of `cargo bench --bench videolisa` (its markdown rows
on stdin): seconds of each side and the ratio PyTorch / ours, with the ratios' range."""
import re
import statistics
import sys

rows = {}
for line in sys.stdin:
    m = re.match(r"\|\s*([a-z ]+?)\s*\|\s*([0-9.]+)\s*\|\s*([0-9.]+)\s*\|", line)
    if m:
        rows.setdefault(m.group(1), []).append((float(m.group(2)), float(m.group(3))))
print("| stage | runs | ours median (s) | PyTorch median (s) | median ratio | ratio range |")
print("|---|---|---|---|---|---|")
for name, runs in rows.items():
    ratios = [t / o for o, t in runs if o > 0]
    if not ratios:
        continue
    print(f"| {name} | {len(runs)} | {statistics.median(o for o, _ in runs):.3f} | "
          f"{statistics.median(t for _, t in runs):.3f} | {statistics.median(ratios):.2f}× | "
          f"{min(ratios):.2f}–{max(ratios):.2f}× |")
