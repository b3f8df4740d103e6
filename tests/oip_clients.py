"""The Open Inference Protocol's own clients against a running `vae serve`, run by
tests/test_serve_oip.py in the clients' environment (.venv-clients: tritonclient and kserve,
no vaesdk). It reads the request arrays from FOLDER/inputs.npz, calls the server with Triton's
HTTP client (binary tensor data on and off) and KServe's v2 REST client (JSON and binary), and
writes what each got back to FOLDER/answers.npz and FOLDER/report.json; the test compares them
with the SDK's own answers.

    python tests/oip_clients.py http://127.0.0.1:8000 FOLDER BUNDLE
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np


def triton(base: str, bundle: str, given: dict[str, np.ndarray], got: dict[str, np.ndarray], report: dict) -> None:
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    client = http.InferenceServerClient(base.removeprefix("http://"), network_timeout=120.0, connection_timeout=60.0)
    report["triton"] = {
        "live": client.is_server_live(), "ready": client.is_server_ready(), "server": client.get_server_metadata(),
        "index": client.get_model_repository_index(), "model_ready": client.is_model_ready(f"{bundle}.decode"),
        "metadata": {kind: client.get_model_metadata(f"{bundle}.{kind}") for kind in ("decode", "encode", "sample", "score")},
        "version_metadata": client.get_model_metadata(f"{bundle}.decode", model_version="1"),
    }  # fmt: skip

    def tensor(name: str, array: np.ndarray, binary: bool) -> http.InferInput:
        datatype = {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8", np.dtype(np.int64): "INT64"}[array.dtype]
        t = http.InferInput(name, list(array.shape), datatype)
        t.set_data_from_numpy(array, binary_data=binary)
        return t

    def infer(kind: str, inputs: dict[str, np.ndarray], outputs: list[str], binary: bool, **options) -> dict[str, np.ndarray]:
        wanted = [http.InferRequestedOutput(o, binary_data=binary) for o in outputs]
        result = client.infer(f"{bundle}.{kind}", [tensor(k, v, binary) for k, v in inputs.items()], outputs=wanted, **options)
        return {o: result.as_numpy(o) for o in outputs}

    for binary in (True, False):
        mode = "binary" if binary else "json"
        for name, array in infer("decode", {"latents": given["latents"]}, ["images"], binary).items():
            got[f"triton_{mode}_decode_{name}"] = array
        for name, array in infer("encode", {"images": given["images"]}, ["mean", "logvar"], binary).items():
            got[f"triton_{mode}_encode_{name}"] = array
        for name, array in infer("sample", {"n": given["n"], "seed": given["seed"]}, ["images", "latents", "seed"], binary).items():
            got[f"triton_{mode}_sample_{name}"] = array
        # The versioned route, and the score model's parameters as Triton sends them.
        scored = infer("score", {"images": given["images"]}, ["anomaly", "p_value"], binary, model_version="1", parameters={"k": 2, "seed": 5})
        for name, array in scored.items():
            got[f"triton_{mode}_score_{name}"] = array
    # No outputs named: Triton's client asks for every output as binary data.
    result = client.infer(f"{bundle}.decode", [tensor("latents", given["latents"], True)])
    got["triton_default_decode_images"] = result.as_numpy("images")
    try:
        client.infer(f"{bundle}.nope", [tensor("latents", given["latents"], True)])
    except InferenceServerException as e:
        report["triton"]["unknown_model"] = {"status": e.status(), "message": e.message()}
    try:
        client.infer(f"{bundle}.decode", [tensor("latents", given["latents"][:, :-1].copy(), False)])
    except InferenceServerException as e:
        report["triton"]["bad_shape"] = {"status": e.status(), "message": e.message()}


async def kserve(base: str, bundle: str, given: dict[str, np.ndarray], got: dict[str, np.ndarray], report: dict) -> None:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput

    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))
    try:
        report["kserve"] = {"live": await client.is_server_live(base), "ready": await client.is_server_ready(base),
                            "model_ready": await client.is_model_ready(base, f"{bundle}.encode")}  # fmt: skip

        async def infer(kind: str, inputs: dict[str, np.ndarray], binary: bool) -> dict[str, np.ndarray]:
            tensors = []
            for name, array in inputs.items():
                datatype = {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8", np.dtype(np.int64): "INT64"}[array.dtype]
                t = InferInput(name, list(array.shape), datatype)
                t.set_data_from_numpy(array, binary_data=binary)
                tensors.append(t)
            outputs = None
            if binary:
                names = {"decode": ["images"], "encode": ["mean", "logvar"], "sample": ["images", "latents", "seed"]}[kind]
                outputs = [RequestedOutput(n, {"binary_data": True}) for n in names]
            request = InferRequest(f"{bundle}.{kind}", tensors, request_outputs=outputs)
            response = await client.infer(base, request, model_name=f"{bundle}.{kind}")
            return {o.name: o.as_numpy() for o in response.outputs}

        for binary in (True, False):
            mode = "binary" if binary else "json"
            for kind, inputs in (("decode", {"latents": given["latents"]}), ("encode", {"images": given["images"]}),
                                 ("sample", {"n": given["n"], "seed": given["seed"]})):  # fmt: skip
                for name, array in (await infer(kind, inputs, binary)).items():
                    got[f"kserve_{mode}_{kind}_{name}"] = array
    finally:
        await client.close()


def main() -> None:
    base, folder, bundle = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    given = dict(np.load(folder / "inputs.npz"))
    got: dict[str, np.ndarray] = {}
    report: dict = {}
    triton(base, bundle, given, got, report)
    asyncio.run(kserve(base, bundle, given, got, report))
    np.savez(folder / "answers.npz", **got)
    (folder / "report.json").write_text(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
