"""Load test of `vae serve` on 127.0.0.1: 32 concurrent clients send mixed requests, hostile
uploads among them, for a bounded time. No 5xx, every answer is the SDK's answer to that
request (nothing lost or mixed up between clients), and the server's memory stays flat."""

from __future__ import annotations

import io
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from vaesdk.imaging.images import encode_png, make_grid
from webserver import vae_serve_process

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ROOT / "docs" / "images" / "inputs"
CLIENTS = 32
WARMUP_S = 3.0
DURATION_S = 12.0
MAX_REQUESTS_PER_CLIENT = 400
# onnxruntime and the allocator settle after the first requests; later growth of more than
# this would mean memory held per request.
MAX_RSS_GROWTH_MIB = 48


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def huge_header_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buf, format="PNG")  # 9 M pixels: over the server's 4 M limit
    return buf.getvalue()


def expectations(model) -> dict:
    shirt, bag = (INPUTS / "shirt.png").read_bytes(), (INPUTS / "bag.png").read_bytes()
    z = np.random.default_rng(1).standard_normal((2, model.latent_dim)).astype(np.float32)
    return {
        "shirt": shirt,
        "bag": bag,
        "z": z.tolist(),
        "sample": {s: encode_png(make_grid(model.sample(4, seed=s))) for s in range(8)},
        "edit": {d: encode_png(model.edit(shirt, dim=d, delta=2.0)[0]) for d in (9, 22, 5)},
        "encode": {"shirt": model.encode(shirt).mean[0].tolist(), "bag": model.encode(bag).mean[0].tolist()},
        "decode": encode_png(make_grid(model.decode(z))),
        "huge": huge_header_png(),
    }


def one_request(client: httpx.Client, rnd: random.Random, x: dict) -> tuple[str, int, bool]:
    """Send one random request; return (kind, status, answer is the expected one)."""
    api = "/v1/models/fashion-mnist"
    kind = rnd.choice(["sample", "sample", "encode", "edit", "decode", "garbage", "huge", "too_big", "bad_json", "unknown"])
    if kind == "sample":
        seed = rnd.randrange(8)
        r = client.post(f"{api}/sample", json={"n": 4, "seed": seed})
        return kind, r.status_code, r.content == x["sample"][seed]
    if kind == "encode":
        which = rnd.choice(["shirt", "bag"])
        r = client.post(f"{api}/encode", files={"image": (f"{which}.png", x[which])})
        return kind, r.status_code, r.status_code == 200 and r.json()["results"][0]["mean"] == x["encode"][which]
    if kind == "edit":
        dim = rnd.choice([9, 22, 5])
        r = client.post(f"{api}/edit", files={"image": ("shirt.png", x["shirt"])}, data={"dim": str(dim), "delta": "2"})
        return kind, r.status_code, r.content == x["edit"][dim]
    if kind == "decode":
        r = client.post(f"{api}/decode", json={"latents": x["z"]})
        return kind, r.status_code, r.content == x["decode"]
    if kind == "garbage":
        r = client.post(f"{api}/reconstruct", files={"image": ("junk.png", os.urandom(rnd.randrange(1, 5000)))})
        return kind, r.status_code, r.status_code == 422 and r.json()["error"] == "invalid_image"
    if kind == "huge":
        r = client.post(f"{api}/encode", files=[("image", ("huge.png", x["huge"])), ("image", ("bag.png", x["bag"]))])
        body = r.json()["results"] if r.status_code == 200 else []
        return kind, r.status_code, len(body) == 2 and "limit" in body[0].get("error", "") and body[1].get("mean") == x["encode"]["bag"]
    if kind == "too_big":
        r = client.post(f"{api}/encode", files={"image": ("big.png", b"\0" * (17 * 1024 * 1024))})
        return kind, r.status_code, r.status_code == 413
    if kind == "bad_json":
        r = client.post(f"{api}/sample", content=b'{"n": ', headers={"content-type": "application/json"})
        return kind, r.status_code, r.status_code == 422
    r = client.post("/v1/models/no-such-model/sample", json={"n": 1})
    return kind, r.status_code, r.status_code == 404


def test_load_mixed_requests_no_5xx_answers_match_memory_flat(bundled_model):
    x = expectations(bundled_model)
    with vae_serve_process("--device", "cpu", "--queue", "64") as (proc, base):
        start = time.monotonic()
        warm_rss: list[float] = []
        results: list[tuple[str, int, bool, float]] = []
        lock = threading.Lock()

        def client_loop(i: int) -> None:
            rnd = random.Random(i)
            with httpx.Client(base_url=base, timeout=30) as client:
                for _ in range(MAX_REQUESTS_PER_CLIENT):
                    if time.monotonic() - start > DURATION_S:
                        return
                    t = time.monotonic()
                    try:
                        kind, status, ok = one_request(client, rnd, x)
                    except httpx.HTTPError as e:  # a lost answer counts as a wrong one
                        kind, status, ok = f"lost ({type(e).__name__})", 0, False
                    with lock:
                        results.append((kind, status, ok, time.monotonic() - t))

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(WARMUP_S)
        warm_rss.append(rss_mib(proc.pid))
        for t in threads:
            t.join(timeout=DURATION_S + 120)
        end_rss = rss_mib(proc.pid)
        elapsed = time.monotonic() - start
        assert not any(t.is_alive() for t in threads), "clients still waiting long after the deadline"

    statuses = Counter(s for _, s, _, _ in results)
    wrong = Counter(k for k, _, ok, _ in results if not ok)
    kinds = Counter(k for k, _, _, _ in results)
    print(
        f"\nload: {len(results)} requests from {CLIENTS} clients in {elapsed:.1f} s ({len(results) / elapsed:.1f}/s); "
        f"statuses {dict(statuses)}; kinds {dict(kinds)}; RSS {warm_rss[0]:.0f} MiB after warm-up, {end_rss:.0f} MiB at the end"
    )
    assert len(results) >= CLIENTS, "too few requests completed to say anything"
    assert not any(s >= 500 for s in statuses), statuses
    assert not wrong, f"answers that differ from the SDK's or the expected refusal: {dict(wrong)}"
    assert end_rss - warm_rss[0] <= MAX_RSS_GROWTH_MIB, (warm_rss, end_rss)
