"""Merge the records of several train_throughput JSON files into one (the first file's header), printing the table.

    python bench/merge_results.py OUT.json IN1.json IN2.json ...
    python bench/merge_results.py OUT.json IN*.json --name train_throughput_repeats --summary

--summary adds one `train_summary` record per (depth, pattern, variant): the mean, lowest and highest tok/s over the
runs, and the mean SM clock. On an H100 one run of a row spreads by about ±1.5%, mostly with the SM clock the
card holds under its power cap, so a claim about a row rests on the mean of several runs. Where the inputs also hold
upstream's step timed on the same card (bench/upstream_step.py, variant "upstream" or "upstream-fp8"), each row gets
`vs_upstream_same_card`: its mean over upstream's mean in the same precision (our FP8 rows against upstream's --fp8),
and each of our `train` rows `upstream_tok_per_s`, that mean.
"""
import argparse
import json
from collections import defaultdict
from statistics import mean

from record import ratio_cell, reference_tok_per_s


def _is_upstream(summary: dict) -> bool: return summary["variant"].startswith("upstream")


def _upstream_means(summaries: list[dict]) -> dict:
    "(depth, pattern, fp8) -> the mean tok/s of upstream's runs among `summaries`."
    return {(s["depth"], s["pattern"], s["fp8"]): s["tok_per_s_mean"] for s in summaries if _is_upstream(s)}


def summarize(records: list[dict], gpu: str) -> list[dict]:
    """One record per (depth, pattern, variant) of the `train` records: mean/min/max tok/s, runs, mean SM clock; the
    ratios to upstream's fixed numbers only where `gpu` is the card they were taken on."""
    groups = defaultdict(list)
    for r in records:
        if r.get("kind") == "train": groups[r["depth"], r["pattern"], r.get("variant", "default")].append(r)
    out = []
    for (depth, pattern, variant), rows in groups.items():
        tok = [r["tok_per_s"] for r in rows]
        summary = {"kind": "train_summary", "depth": depth, "pattern": pattern, "variant": variant, "runs": len(rows),
                   "fp8": any(r.get("fp8", False) for r in rows),
                   "tok_per_s_mean": round(mean(tok)), "tok_per_s_min": min(tok), "tok_per_s_max": max(tok)}
        clocks = [r["sm_mhz_mean"] for r in rows if r.get("sm_mhz_mean")]
        if clocks: summary["sm_mhz_mean"] = round(mean(clocks))
        ref = reference_tok_per_s(gpu, depth, pattern)
        if ref:
            summary |= {"vs_upstream_mean": round(mean(tok) / ref, 3), "vs_upstream_min": round(min(tok) / ref, 3),
                        "vs_upstream_max": round(max(tok) / ref, 3)}
        out.append(summary)
    upstream_means = _upstream_means(out)
    for s in out:
        key = s["depth"], s["pattern"], s["fp8"]
        if not _is_upstream(s) and key in upstream_means:
            s["vs_upstream_same_card"] = round(s["tok_per_s_mean"] / upstream_means[key], 3)
    return out


def beside_upstream(records: list[dict], summaries: list[dict]) -> list[dict]:
    """Copies of `records` where each of our `train` rows carries the upstream step it was timed beside
    (`upstream_tok_per_s`: the mean of upstream's runs of the same depth, pattern and precision in `summaries`)."""
    upstream_means = _upstream_means(summaries)
    out = []
    for r in records:
        key = r.get("depth"), r.get("pattern"), r.get("fp8", False)
        ours = r.get("kind") == "train" and not r.get("variant", "default").startswith("upstream")
        out.append(dict(r, upstream_tok_per_s=upstream_means[key]) if ours and key in upstream_means else dict(r))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--name", default=None, help="the merged result's name (default: the first file's)")
    p.add_argument("--summary", action="store_true", help="add mean/min/max records per row")
    args = p.parse_args()
    results = [json.loads(open(path).read()) for path in args.inputs]
    merged = dict(results[0], records=[r for res in results for r in res["records"]])
    if args.name: merged["name"] = args.name
    gpus = {res.get("gpu", "?") for res in results}
    if len(gpus) > 1: p.error(f"the inputs come from different GPUs ({', '.join(sorted(gpus))}): merge runs of one card")
    for r in merged["records"]:  # a ratio to the H100 reference is meaningless on another card (older files carry one)
        if reference_tok_per_s(merged.get("gpu", "?"), r.get("depth", 0), r.get("pattern", "")) is None: r.pop("vs_upstream", None)
    print(f"{'depth':>5} {'pattern':>7} {'attention':>9} {'variant':>16} {'tok/s':>10} {'MFU':>6} {'SM MHz':>6} {'vs upstream':>11}")
    for r in merged["records"]:
        print(f"{r['depth']:>5} {r['pattern']:>7} {r.get('attention', '?'):>9} {r.get('variant', 'default'):>16} "
              f"{r.get('tok_per_s', 0):>10,} {r.get('mfu', float('nan')):>6.1%} {r.get('sm_mhz_mean', 0):>6} "
              f"{ratio_cell(r.get('vs_upstream')):>11}")
    if args.summary:
        summaries = summarize(merged["records"], merged.get("gpu", "?"))
        merged["records"] = beside_upstream(merged["records"], summaries) + summaries
        print(f"\n{'depth':>5} {'pattern':>7} {'variant':>16} {'runs':>4} {'mean tok/s':>10} {'range':>19} {'vs upstream (mean, range)':>28}")
        for s in (r for r in merged["records"] if r["kind"] == "train_summary"):
            print(f"{s['depth']:>5} {s['pattern']:>7} {s['variant']:>16} {s['runs']:>4} {s['tok_per_s_mean']:>10,} "
                  f"{s['tok_per_s_min']:>9,}-{s['tok_per_s_max']:<9,} "
                  + (f"{s['vs_upstream_mean']:>12.3f}x ({s['vs_upstream_min']:.3f}-{s['vs_upstream_max']:.3f})" if "vs_upstream_mean" in s
                     else f"{'-':>28}")
                  + (f"  same card: {s['vs_upstream_same_card']:.3f}x" if "vs_upstream_same_card" in s else ""))
    line = json.dumps(merged)
    print(line)
    open(args.out, "w").write(line + "\n")


if __name__ == "__main__":
    main()
