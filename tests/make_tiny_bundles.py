"""Make the tiny bundles the runtime and CLI tests load: tests/data/tiny-vae and tiny-ae.

They are trained for a few hundred steps on real Fashion-MNIST images and exported through
the full pipeline (parity gate included), small enough to commit (tens of KB each), so the
runtime and command-line tests need neither torch nor a training run. Run it again, and
commit the result, when the bundle format or the export changes:

    python tests/make_tiny_bundles.py        # needs the train extra and dataset-fashion-mnist

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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("vae", "ae"):
            # The narrowest widths that still learn something recognisable: small files.
            made = train_and_export(Path(tmp), kind, widths=(4, 8, 8))
            dest = DATA / f"tiny-{kind}"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(made, dest)
            size = sum(p.stat().st_size for p in dest.iterdir())
            print(f"{dest}: {size / 1024:.0f} KiB", file=sys.stderr)


if __name__ == "__main__":
    main()
