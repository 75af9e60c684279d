"""Gathers tools/gpu/check.sh's measurements into report.json and report.txt (printed).

  python tools/gpu/report.py WORK_DIR OUT_DIR SMALL LARGE
"""
import json
import os
import sys


def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def last_json_line(path):
    try:
        lines = [line for line in open(path) if line.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def peak(run):
    if not run or run.get("peak_mib") is None:
        return None
    return run["peak_mib"] - run["baseline_mib"]


def ours(work, name):
    run, summary = load(os.path.join(work, name + ".run.json")), load(os.path.join(work, name, "summary.json"))
    if not run or not summary:
        return {"ok": False, "run": run}
    s = summary["seconds"]
    return {"ok": run["rc"] == 0, "frames": summary["frames"], "sam_batch": summary.get("sam_batch"),
            "dtypes": summary["dtypes"], "seconds": s, "processing_s": s["total"], "wall_s": run["wall"],
            "load_s": run["wall"] - s["total"], "sam_encoder_fps": summary["frames"] / max(s["sam_encode"], 1e-9),
            "llm_ms": 1000 * s["llm"], "peak_gpu_mib": peak(run)}


def reference(work, name):
    run, t = load(os.path.join(work, name + ".run.json")), last_json_line(os.path.join(work, name + ".stdout"))
    if not run or not t:
        return {"ok": False, "run": run}
    return {"ok": run["rc"] == 0, "frames": t["frames"], "seconds": t, "processing_s": t["total"] - t["load"],
            "wall_s": run["wall"], "load_s": t["load"], "sam_encoder_fps": t["frames"] / max(t["sam_encode"], 1e-9),
            "llm_ms": 1000 * t["llm"], "peak_gpu_mib": peak(run), "attention": t.get("attention"),
            "versions": t.get("versions"), "peak_allocated_gb": t.get("peak_gpu_allocated_gb")}


def ratio(a, b):
    return None if not a or not b else a / b


def main(work, out, small, large):
    parity = {}
    tsv = os.path.join(work, "parity.tsv")
    if os.path.exists(tsv):
        for line in open(tsv):
            name, rc = line.split()
            parity[name] = "pass" if rc == "0" else f"FAIL (exit {rc})"
    bf16 = [line.strip() for f in ["parity_bf16.log"] if os.path.exists(os.path.join(work, f))
            for line in open(os.path.join(work, f)) if "bf16 vs f32" in line]
    gpu = open(os.path.join(work, "gpu.csv")).read().strip().splitlines()[-1] if os.path.exists(
        os.path.join(work, "gpu.csv")) else "none (dry run)"
    r = {"gpu": gpu, "parity": parity, "bf16_vs_f32_tiny": bf16,
         "ours": {k: ours(work, n) for k, n in [("cold_" + small, "ours_cold"), (small, "ours_small"),
                                                 (large, "ours_large"), (small + "_batch1", "ours_batch1")]},
         "pytorch": {small: reference(work, "py_small"), large: reference(work, "py_large")},
         "mask_agreement_ours_vs_pytorch": load(os.path.join(work, "agreement.json"))}
    o, p = r["ours"][small], r["pytorch"][small]
    r["ratios_pytorch_over_ours"] = {
        "processing": ratio(p.get("processing_s"), o.get("processing_s")),
        "wall_with_load": ratio(p.get("wall_s"), o.get("wall_s")),
        "sam_encode": ratio(o.get("sam_encoder_fps"), p.get("sam_encoder_fps")),
        "llm": ratio(p.get("llm_ms"), o.get("llm_ms"))}
    r["ours_peak_memory_large_over_small"] = ratio(r["ours"][large].get("peak_gpu_mib"), o.get("peak_gpu_mib"))
    json.dump(r, open(os.path.join(out, "report.json"), "w"), indent=1)

    def f(v, fmt="{:.2f}"):
        return "—" if v is None else fmt.format(v)

    rows = [f"GPU: {gpu}", "parity on CUDA: " + (", ".join(f"{k} {v}" for k, v in parity.items()) or "not run")]
    rows += bf16
    rows.append(f"{'run':<22}{'frames':>7}{'batch':>6}{'process s':>10}{'wall s':>8}{'load s':>8}"
                f"{'SAM fps':>9}{'LLM ms':>8}{'peak MiB':>10}")
    for label, x in [(f"ours cold", r["ours"]["cold_" + small]), ("ours", o), ("ours", r["ours"][large]),
                     ("ours --sam-batch 1", r["ours"][small + "_batch1"]), ("PyTorch", p),
                     ("PyTorch", r["pytorch"][large])]:
        if x.get("frames"):
            rows.append(f"{label:<22}{x['frames']:>7}{str(x.get('sam_batch', 1)):>6}{f(x['processing_s']):>10}"
                        f"{f(x['wall_s']):>8}{f(x['load_s']):>8}{f(x['sam_encoder_fps'], '{:.1f}'):>9}"
                        f"{f(x['llm_ms'], '{:.1f}'):>8}{f(x['peak_gpu_mib'], '{:.0f}'):>10}")
    rr = r["ratios_pytorch_over_ours"]
    rows.append("PyTorch / ours: processing {}×, wall {}×, SAM encoder {}×, LLM {}×; ours peak memory {}/{} frames: {}"
                .format(f(rr["processing"]), f(rr["wall_with_load"]), f(rr["sam_encode"]), f(rr["llm"]), large, small,
                        f(r["ours_peak_memory_large_over_small"], "{:.3f}")))
    if p.get("attention"):
        rows.append(f"reference: {p.get('versions')}, attention {p['attention']}")
    rows.append(f"masks ours vs PyTorch ({small} frames): {r['mask_agreement_ours_vs_pytorch']}")
    text = "\n".join(rows) + "\n"
    open(os.path.join(out, "report.txt"), "w").write(text)
    print(text)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
