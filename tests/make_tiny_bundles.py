"""Make the tiny bundles the runtime and CLI tests load: tests/data/tiny-vae, tiny-ae and
tiny-lowrank (the default decoder: low-rank-plus-diagonal covariance, dequantized likelihood,
with a fitted mixture prior); and tiny-bernoulli, tiny-cbernoulli, tiny-fixed and tiny-none,
small MLP VAEs exported by `vae export --from` with each likelihood kind that only such
imported models have (vaesdk.export.importer), for the conformance vectors; and tiny-kl and
tiny-taesd, latent-diffusion autoencoders with spatial latents (`SPATIAL`).

They are trained for a few hundred steps on real Fashion-MNIST images and exported through
the full pipeline (parity gate included), small enough to commit (tens of KB each), so the
runtime and command-line tests need neither torch nor a training run. Run it again, and
commit the result, when the bundle format or the export changes:

    python tests/make_tiny_bundles.py [vae] [ae] [lowrank] [bernoulli] ... [kl] [taesd]   # all by default;
                                                 # needs the train and import extras and dataset-fashion-mnist

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


# Imported models, one per likelihood kind that vae train does not make: name -> --likelihood.
IMPORTED = {"bernoulli": "bernoulli", "cbernoulli": "continuous-bernoulli", "fixed": "gaussian:0.1", "none": "none"}


def import_and_export(root: Path, name: str) -> Path:
    """A small MLP VAE (784-16-8), trained for one pass over 2,000 Fashion-MNIST images with
    its likelihood's own loss, exported with `export_vae` to root/tiny-NAME."""
    import numpy as np
    import torch
    from torch import nn

    from vaesdk.evaluation.datasets import load_fashion_mnist
    from vaesdk.export.importer import export_vae

    likelihood = IMPORTED[name]
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 2 * LATENT_DIM), nn.Unflatten(1, (2, LATENT_DIM)))
    head = nn.Sequential(nn.Linear(LATENT_DIM, 16), nn.ReLU(), nn.Linear(16, 784), nn.Unflatten(1, (1, 28, 28)))
    decoder = nn.Sequential(head, nn.Sigmoid()) if name in ("bernoulli", "cbernoulli") else head
    images = load_fashion_mnist(split="test").images
    x = torch.from_numpy(images[:2000].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], 3e-3)
    for i in range(0, len(x), 64):
        xb = x[i : i + 64]
        out = encoder(xb)
        mean, logvar = out[:, 0], out[:, 1]
        recon = decoder(mean + torch.randn_like(mean) * torch.exp(0.5 * logvar))
        if name in ("bernoulli", "cbernoulli"):
            loss = nn.functional.binary_cross_entropy(recon, xb, reduction="sum")
        else:
            loss = ((recon - xb) ** 2).sum() / (2 * 0.1**2)
        loss = loss - 0.5 * torch.sum(1 + logvar - mean**2 - logvar.exp())
        opt.zero_grad()
        loss.backward()
        opt.step()

    class Encoder(nn.Module):  # (mean, logvar) as a tuple
        def __init__(self):
            super().__init__()
            self.net = encoder

        def forward(self, x):
            out = self.net(x)
            return out[:, 0], out[:, 1]

    return export_vae(Encoder(), decoder, root / f"tiny-{name}", images=images[:2000], held_out=images[5000:5200],
                      image_size=28, channels=1, likelihood=likelihood, name=f"tiny-{name}",
                      mixture_covariance="diagonal" if name == "none" else None,  # the vectors' diagonal mixture
                      source={"from": "python", "function": f"tests/make_tiny_bundles.py ({name})"})  # fmt: skip


# Latent-diffusion autoencoders with random weights (diffusers' classes, built from code):
# tiny-kl, an AutoencoderKL with f = 8 and the middle block's attention, exported with its
# float16 decoder; tiny-taesd, an AutoencoderTiny with f = 4. Both take any image size.
SPATIAL = ("kl", "taesd")


def diffusers_export(root: Path, name: str) -> Path:
    """Build tiny-NAME's diffusers model from code and export it with `vae export --from diffusers`."""
    import diffusers
    import torch
    from vaesdk.export.importer import export_from

    torch.manual_seed(0)
    if name == "kl":
        model = diffusers.AutoencoderKL(
            block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215,
        )  # fmt: skip
    else:
        model = diffusers.AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8), num_encoder_blocks=(1, 1, 1),
            num_decoder_blocks=(1, 1, 1), latent_channels=4,
        )  # fmt: skip
    model.save_pretrained(root / f"diffusers-{name}")
    return export_from("diffusers", str(root / f"diffusers-{name}"), root / f"tiny-{name}", images=DATA / "emoji-inputs",
                       name=f"tiny-{name}", fp16=name == "kl", log=lambda s: print(s, file=sys.stderr))  # fmt: skip


OVERFLOW_FP16 = DATA / "fp16-overflow-decoder.onnx"


def overflow_fp16_decoder() -> None:
    """tests/data/fp16-overflow-decoder.onnx: a decoder of tiny-kl's contract (z [N, 4, h, w] ->
    mean [N, 3, 8h, 8w]) whose output overflows to infinity on every input, as an SDXL decoder's
    does in float16 on some: put in place of tiny-kl's float16 decoder, it tests the runtime's
    guard. (Its products overflow float32 too, so no graph optimizer can take the overflow away.)"""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((192, 4, 1, 1)).astype(np.float32), "w")
    big = numpy_helper.from_array(np.array(1e30, np.float32), "big")
    nodes = [
        helper.make_node("Conv", ["z", "w"], ["c"]),
        helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=8),
        helper.make_node("Mul", ["d", "big"], ["m1"]),
        helper.make_node("Mul", ["m1", "big"], ["mean"]),
    ]
    graph = helper.make_graph(
        nodes, "overflow", [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4, "h", "w"])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["N", 3, "H", "W"])], [weight, big],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, OVERFLOW_FP16)


def main(names: list[str]) -> None:
    unknown = set(names) - set(BUNDLES) - set(IMPORTED) - set(SPATIAL)
    if unknown:
        raise SystemExit(f"unknown bundle {sorted(unknown)}; choose from {', '.join([*BUNDLES, *IMPORTED, *SPATIAL])}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or [*BUNDLES, *IMPORTED, *SPATIAL]:
            if name == "kl":
                overflow_fp16_decoder()
            if name in SPATIAL:
                made = diffusers_export(Path(tmp), name)
            else:
                made = import_and_export(Path(tmp), name) if name in IMPORTED else train_and_export(Path(tmp), **BUNDLES[name])
            dest = DATA / f"tiny-{name}"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(made, dest)
            size = sum(p.stat().st_size for p in dest.iterdir())
            print(f"{dest}: {size / 1024:.0f} KiB", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
