"""Merge the records of several train_throughput JSON files into one (the first file's header), printing the table.

    python bench/merge_results.py OUT.json IN1.json IN2.json ...
"""
import json
import sys

out, *ins = sys.argv[1:]
results = [json.loads(open(p).read()) for p in ins]
merged = dict(results[0], records=[r for res in results for r in res["records"]])
print(f"{'depth':>5} {'pattern':>7} {'attention':>9} {'variant':>16} {'tok/s':>10} {'MFU':>6} {'mem GB':>7} {'vs upstream':>11}")
for r in merged["records"]:
    print(f"{r['depth']:>5} {r['pattern']:>7} {r['attention']:>9} {r['variant']:>16} {r['tok_per_s']:>10,} {r['mfu']:>6.1%} "
          f"{r['peak_mem_gb']:>7} {r.get('vs_upstream', float('nan')):>10.2f}x")
line = json.dumps(merged)
print(line)
open(out, "w").write(line + "\n")
