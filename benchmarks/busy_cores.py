"""Loading a bundle while another process does threaded numpy work: numpy's BLAS held to one thread
(`vaesdk.base.blas.one_blas_thread`, what the SDK does) against numpy's default threads.

    python benchmarks/busy_cores.py [--models emoji fashion-mnist] [--runs 7] [--out FILE]

A bundle's priors are checked when it loads (each factor is inverted); a threaded BLAS waits
for a core that another process holds. This runs `vae sample --n 16` in fresh processes, the
two settings alternating, first with nothing else running, then beside another process doing
threaded numpy work (products of 1500x1500 matrices in a loop, numpy's default threads;
stopped at the end, and after 15 minutes in any case). "default threads" is the same
SDK with `one_blas_thread` replaced by a context that changes nothing. Prints the median, min
and max wall time of each; writes every time to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import contextlib, sys
if sys.argv[1] == "default":
    import vaesdk.base.blas as blas
    blas.one_blas_thread = contextlib.nullcontext
    for name in ("vaesdk.maths.latent", "vaesdk.maths.priors", "vaesdk.maths.likelihood"):
        __import__(name)
        setattr(sys.modules[name], "one_blas_thread", contextlib.nullcontext)
from vaesdk.cli.main import main
sys.argv = ["vae", "sample", "-m", sys.argv[2], "--n", "16", "--seed", "0", "-o", sys.argv[3], "--force"]
sys.exit(main())
"""
HOG = "import time\nimport numpy as np\na = np.ones((1500, 1500))\nend = time.monotonic() + 900\nwhile time.monotonic() < end:\n    a @ a\n"
SETTINGS = ("one thread", "default")


def one_run(setting: str, model: str, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, "default" if setting == "default" else "limited", model, str(out)], check=True, capture_output=True)
    return time.perf_counter() - t


def measure(models: list[str], runs: int, out: Path) -> dict:
    results: dict = {}
    for model in models:
        one_run(SETTINGS[0], model, out)  # warm the file cache
        times: dict[str, list[float]] = {s: [] for s in SETTINGS}
        for _ in range(runs):
            for s in SETTINGS:
                times[s].append(one_run(s, model, out))
        results[model] = times
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["emoji", "fashion-mnist"])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/busy-cores-results.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "s.png"
        report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.machine(), "runs": args.runs}
        report["idle"] = measure(args.models, args.runs, png)
        hog = subprocess.Popen([sys.executable, "-c", HOG])
        try:
            time.sleep(1.0)
            report["beside threaded numpy"] = measure(args.models, args.runs, png)
        finally:
            hog.kill()
            hog.wait()
    print("| model | machine | BLAS | median s | min..max |")
    print("|---|---|---|---:|---|")
    for state in ("idle", "beside threaded numpy"):
        for model, times in report[state].items():
            for s, ts in times.items():
                print(f"| {model} | {state} | {s} | {statistics.median(ts):.2f} | {min(ts):.2f}..{max(ts):.2f} |")
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
