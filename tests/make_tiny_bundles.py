"""Make the tiny bundles the runtime and CLI tests load: tests/data/tiny-vae, tiny-ae and
tiny-lowrank (the default decoder: low-rank-plus-diagonal covariance, dequantized likelihood,
with a fitted mixture prior).

They are trained for a few hundred steps on real Fashion-MNIST images and exported through
the full pipeline (parity gate included), small enough to commit (tens of KB each), so the
runtime and command-line tests need neither torch nor a training run. Run it again, and
commit the result, when the bundle format or the export changes:

    python tests/make_tiny_bundles.py [vae] [ae] [lowrank]   # all three by default; needs the
                                                              # train extra and dataset-fashion-mnist

`train_and_export` is also what the export tests call to make a fresh bundle of their own.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
LATENT_DIM = 8
# The decoder of format-1 bundles: diagonal covariance, exact discretized likelihood.
DIAGONAL = dict(covariance="diagonal", rank=0, likelihood="discretized")
# The default decoder at rank 4, for the covariance, prior and export tests.
LOWRANK = dict(name="lowrank", covariance="lowrank", rank=4, likelihood="dequantized")
# The narrowest widths that still learn something recognisable keep vae and ae small.
BUNDLES = {
    "vae": dict(kind="vae", widths=(4, 8, 8)),
    "ae": dict(kind="ae", widths=(4, 8, 8)),
    "lowrank": dict(kind="vae", **LOWRANK),
}


def train_and_export(root: Path, kind: str, widths: tuple[int, ...] = (8, 16, 32), name: str | None = None, **model_options) -> Path:
    """Train `kind` ('vae' or 'ae') into root/run-NAME and export it to root/tiny-NAME (NAME defaults to KIND)."""
    from vaesdk.export.pipeline import export_bundle
    from vaesdk.training.config import ModelConfig, TrainConfig
    from vaesdk.training.train import train

    name = name or kind
    run = root / f"run-{name}"
    config = TrainConfig(
        model=ModelConfig(kind=kind, latent_dim=LATENT_DIM, widths=widths, **model_options),
        out_dir=str(run),
        limit=3000,
        max_epochs=2,
        batch_size=64,
        lr=2e-3,
        kl_warmup_epochs=1,
        fixed_variance_epochs=1,
    )
    train(config, command=f"tests/make_tiny_bundles.py ({kind})", log=lambda s: None)
    return export_bundle(run, root / f"tiny-{name}", eval_data="fashion-mnist", eval_limit=300, iw_samples=8)


def main(names: list[str]) -> None:
    unknown = set(names) - set(BUNDLES)
    if unknown:
        raise SystemExit(f"unknown bundle {sorted(unknown)}; choose from {', '.join(BUNDLES)}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or BUNDLES:
            made = train_and_export(Path(tmp), **BUNDLES[name])
            dest = DATA / f"tiny-{name}"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(made, dest)
            size = sum(p.stat().st_size for p in dest.iterdir())
            print(f"{dest}: {size / 1024:.0f} KiB", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
