"""Loading a bundle while another process does threaded numpy work: numpy's BLAS on one thread
(`OPENBLAS_NUM_THREADS=1`) against its default threads.

    python benchmarks/busy_cores.py [--models emoji fashion-mnist] [--runs 7] [--out FILE]

onnxruntime does the SDK's heavy work with its own threads; numpy's BLAS does the small products
around it (a prior's factors are inverted when a bundle loads, a mixture's densities computed
when it scores). A threaded BLAS waits for a core that another process holds. Each setting runs
in fresh processes, the two alternating: `vae sample --n 16`, and the inversion of the emoji
bundle's full-covariance prior factors (its `em` mixture, 40 of 128x128, and its ten category
Gaussians) as loading checks them, timed inside the process. First with nothing else running,
then beside another process doing products of 1500x1500 matrices in a loop with numpy's default
threads (stopped at the end, and after 15 minutes in any case). Prints the median, min and max
of each; writes every time to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INVERT = """
import time, numpy as np, vaesdk
priors = vaesdk.load("emoji", device="cpu").spec.prior_set.fitted.values()
factors = [p.cholesky for p in priors if p.cholesky.ndim >= 2 and p.cholesky.shape[-1] == p.cholesky.shape[-2]]
t = time.perf_counter()
for c in factors:
    np.linalg.inv(c)
print(time.perf_counter() - t)
"""
HOG = "import time\nimport numpy as np\na = np.ones((1500, 1500))\nend = time.monotonic() + 900\nwhile time.monotonic() < end:\n    a @ a\n"
SETTINGS = ("OPENBLAS_NUM_THREADS=1", "default")


def env(setting: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if setting != "default":
        out["OPENBLAS_NUM_THREADS"] = "1"
    return out


def cold_start(setting: str, model: str, png: Path) -> float:
    t = time.perf_counter()
    vae = [sys.executable, "-m", "vaesdk", "sample", "-m", model, "--n", "16", "--seed", "0", "-o", str(png), "--force"]
    subprocess.run(vae, check=True, capture_output=True, env=env(setting), cwd=png.parent)
    return time.perf_counter() - t


def inversion(setting: str) -> float:
    r = subprocess.run([sys.executable, "-c", INVERT], check=True, capture_output=True, text=True, env=env(setting), cwd=tempfile.gettempdir())
    return float(r.stdout)


def measure(models: list[str], runs: int, png: Path) -> dict:
    jobs = {"inverting the emoji priors' factors": inversion}
    jobs.update({f"`vae sample -m {m} --n 16`": (lambda s, m=m: cold_start(s, m, png)) for m in models})
    results: dict = {}
    for what, job in jobs.items():
        job(SETTINGS[0])  # warm the file cache
        times: dict[str, list[float]] = {s: [] for s in SETTINGS}
        for _ in range(runs):
            for s in SETTINGS:
                times[s].append(job(s))
        results[what] = times
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["emoji", "fashion-mnist"])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/busy-cores-results.json"))
    args = ap.parse_args()
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.machine(), "cores": os.cpu_count(), "runs": args.runs}
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "s.png"
        report["idle"] = measure(args.models, args.runs, png)
        hog = subprocess.Popen([sys.executable, "-c", HOG])
        try:
            time.sleep(1.0)
            report["beside threaded numpy"] = measure(args.models, args.runs, png)
        finally:
            hog.kill()
            hog.wait()
    print("| what | machine | BLAS threads | median s | min..max |")
    print("|---|---|---|---:|---|")
    for state in ("idle", "beside threaded numpy"):
        for what, times in report[state].items():
            for s, ts in times.items():
                print(f"| {what} | {state} | {s} | {statistics.median(ts):.3f} | {min(ts):.3f}..{max(ts):.3f} |")
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
