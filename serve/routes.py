"""The service's own routes (/healthz, /v1/...): each parses its request (serve/requests.py),
makes one SDK call in the worker pool, and writes the answer: PNG, or JSON when asked.

A model with spatial latents (contract.operations_of) has decode, reconstruct, edit, encode and
embed: images at their own size, latents with their shape. Its sample and score answer the
SDK's refusal (422)."""

from __future__ import annotations

import base64
from typing import Any, Callable

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response

import vaesdk
from vaesdk import encode_png, frontend, make_grid
from vaesdk.base.errors import VaesdkError

from . import contract
from .errors import ApiError
from .requests import RequestModels, direction_of, json_object, parse, spatial_latents, uploads, wants_json
from .served import Served

PNG = "image/png"
ERRORS = (401, 403, 404, 408, 413, 422, 500, 503, 504)  # a computing route's answers besides 200
JSON_ERRORS = (401, 403, 404, 408, 413, 415, 422, 500, 503, 504)  # ... and a JSON route's


def png_response(image: np.ndarray, headers: dict[str, str] | None = None) -> Response:
    return Response(encode_png(image), media_type=PNG, headers=headers)


def b64png(image: np.ndarray) -> str:
    return base64.b64encode(encode_png(image)).decode("ascii")


def seed_of(value: int | None) -> int:
    return frontend.fresh_seed() if value is None else value


def image_answer(request: Request, entries: list[dict[str, Any]], headers: dict[str, str] | None = None) -> Response:
    """One upload: its PNG (or 422); several, or JSON asked for: one entry each."""
    if len(entries) == 1 and not wants_json(request):
        if "error" in entries[0]:
            raise ApiError(422, "invalid_image", entries[0]["error"])
        return png_response(entries[0]["result"], headers)
    body = [{"name": e["name"], **({"error": e["error"]} if "error" in e else {"png": b64png(e["result"])})} for e in entries]
    return JSONResponse({"results": body}, headers=headers)


def job_results(result: vaesdk.JobResult, record: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per upload, in upload order: its record, or the error that stopped it."""
    return [{"name": name, **({"error": str(x).splitlines()[0]} if isinstance(x, VaesdkError) else record(x))} for name, x in result.in_input_order()]


def router(served: Served) -> APIRouter:
    doc, limits = served.doc, served.limits
    requests = RequestModels(doc, served.models)
    api = APIRouter()
    v1 = [Depends(served.authorize)]
    # The document's request bodies for the routes' one `{name}` path (Contract.per_model_paths
    # writes each model's own).
    forms = {"reconstruct": doc.reconstruct_body(), "edit": doc.edit_body(), "encode": doc.encode_body(), "score": doc.score_body(), "embed": doc.embed_body()}

    async def form(request: Request, name: str, route: str) -> tuple[list[tuple[str, bytes]], Any]:
        return await uploads(request, requests.forms[name, route], limits.max_images, limits.max_body_bytes)

    def per_image(files: list[tuple[str, bytes]], model: vaesdk.Model, operation: str, **options: Any) -> Callable[[], list[dict[str, Any]]]:
        """`operation` on every upload, its arguments checked now (a bad one answers 422
        before the request takes a pool slot); the work, run in a worker, gives each upload's
        result or the error that stopped it, in upload order."""
        # Decoded in that worker (workers=1): the server's pool already runs requests side by side.
        results = vaesdk.map_images(model, operation, files, workers=1, max_pixels=limits.max_image_pixels, **options)
        return lambda: [{"name": r.name, "result": r.output} if r.ok else {"name": r.name, "error": str(r.error).splitlines()[0]} for r in results]

    def latents_of(files: list[tuple[str, bytes]], model: vaesdk.Model) -> Callable[[], list[dict[str, Any]]]:
        """Each upload's latent with its shape (spatial latents: each image at its own size), or
        the error that stopped it, in upload order."""

        def run() -> list[dict[str, Any]]:
            entries: list[dict[str, Any]] = []
            for batch in vaesdk.read_inputs(files, model, model.batch_size, workers=1, max_pixels=limits.max_image_pixels):
                for item in batch.items:
                    if not item.ok:
                        entries.append({"name": item.name, "error": str(item.error).splitlines()[0]})
                        continue
                    posterior = model.encode(item.image)
                    entries.append({
                        "name": item.name, "shape": list(posterior.mean.shape[1:]), "mean": posterior.mean[0].ravel().tolist(),
                        "logvar": posterior.logvar[0].ravel().tolist() if posterior.logvar is not None else None,
                    })  # fmt: skip
            return entries

        return run

    @api.get("/healthz", tags=["service"], operation_id="healthz", response_model=contract.Health)
    async def healthz() -> dict[str, str]:
        """Whether the service is up: {status: "ok"}, with no token needed."""
        return {"status": "ok"}

    @api.get("/v1/models", tags=["models"], operation_id="list_models", dependencies=v1, response_model=contract.ModelList, responses=doc.errors(401))
    async def list_models() -> dict[str, Any]:
        """The served models' descriptions (as `Model.describe()`)."""
        return {"models": list(served.descriptions.values())}

    @api.get("/v1/models/{name}", tags=["models"], operation_id="describe_model", dependencies=v1, response_model=dict[str, Any], responses=doc.errors(401, 404))
    async def describe(name: str = doc.name_param()) -> dict[str, Any]:
        """One served model's description (as `Model.describe()`, without its path)."""
        served.model_of(name)
        return served.descriptions[name]

    bundle_files = {
        200: {"description": "The file's bytes.", "content": {"application/json": {"schema": {"type": "object"}}, "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    }

    @api.get("/v1/models/{name}/files/{file}", tags=["models"], operation_id="bundle_file", dependencies=v1, response_class=Response, responses={**bundle_files, **doc.errors(401, 404)})
    async def bundle_file(name: str = doc.name_param(), file: str = doc.file_param()) -> Response:
        """The bundle's own files (manifest.json, encoder.onnx, decoder.onnx, the mixture priors' .npz), for the page."""
        model = served.model_of(name)
        files = served.descriptions[name]["files"]
        if file not in files.values():
            raise ApiError(404, "not_found", f"no file {file[:80]!r} in bundle {name!r}; files: {', '.join(files.values())}")
        return FileResponse(model.path / file, media_type="application/json" if file.endswith(".json") else "application/octet-stream")

    @api.post(
        "/v1/models/{name}/sample", operation_id="sample", tags=["generate"], dependencies=v1, response_class=JSONResponse,
        openapi_extra=doc.json_body(doc.sample_model()),
        responses={**doc.image_answer(contract.SampleJson, "A PNG grid of the samples.", "each image and its latent.", seeded=True), **doc.errors(*JSON_ERRORS)},
    )  # fmt: skip
    async def sample(request: Request, name: str = doc.name_param()) -> Response:
        """JSON {n, seed, prior, temperature, truncation, ncols} -> a PNG grid (or JSON with
        the images and their latents when the request accepts application/json)."""
        model = served.model_for(name, "sample")
        body = parse(requests.json[name, "sample"], await json_object(request, limits.max_json_bytes), model.latent_dim)
        seed = seed_of(body.seed)
        # The SDK checks the values once, here: a bad one answers 422 before the request takes a pool slot.
        draw = model.prepare(
            "sample", n=body.n, seed=seed, prior=body.prior, temperature=body.temperature, truncation=body.truncation, return_latents=True
        )
        as_json = wants_json(request)

        def run() -> Any:
            images, z = draw()
            return (images, z) if as_json else make_grid(images, ncols=body.ncols)

        result = await served.compute(request, run)
        headers = {"X-Vaesdk-Seed": str(seed)}
        if not as_json:
            return png_response(result, headers)
        images, z = result
        return JSONResponse({"seed": seed, "latents": z.tolist(), "images": [b64png(im) for im in images]}, headers=headers)

    @api.post(
        "/v1/models/{name}/decode", operation_id="decode", tags=["generate"], dependencies=v1, response_class=JSONResponse,
        openapi_extra=doc.json_body(doc.decode_model()),
        responses={**doc.image_answer(contract.DecodeJson, "A PNG grid of the decoded images.", "one PNG per latent.", seeded=False), **doc.errors(*JSON_ERRORS)},
    )  # fmt: skip
    async def decode(request: Request, name: str = doc.name_param()) -> Response:
        """JSON {latents: [[...], ...], ncols} -> a PNG grid (or JSON images)."""
        model = served.model_for(name, "decode")
        if model.geometry.spatial:
            body = parse(requests.json[name, "decode"], await json_object(request, limits.max_json_bytes), 0)
            z = spatial_latents(body, model, limits.max_image_pixels)
            decoded = await served.compute(request, lambda: model.decode_with_info(z, precision=body.precision))
            headers = {contract.PRECISION_HEADER: ", ".join(decoded.precision)}
            if len(z) == 1 and not wants_json(request):
                return png_response(decoded.images[0], headers)
            return JSONResponse({"images": [b64png(im) for im in decoded.images], "precision": decoded.precision}, headers=headers)
        body = parse(requests.json[name, "decode"], await json_object(request, limits.max_json_bytes), model.latent_dim)
        z = np.asarray(body.latents, dtype=np.float64)
        if wants_json(request):
            images = await served.compute(request, lambda: model.decode(z))
            return JSONResponse({"images": [b64png(im) for im in images]})
        # One pool slot and one timeout for the whole request.
        return png_response(await served.compute(request, lambda: make_grid(model.decode(z), ncols=body.ncols)))

    @api.post(
        "/v1/models/{name}/reconstruct", operation_id="reconstruct", tags=["images"], dependencies=v1, response_class=JSONResponse, openapi_extra=forms["reconstruct"],
        responses={**doc.image_answer(contract.ImageResults, "One upload: its reconstruction, PNG.", "several uploads: one entry each.", seeded=True), **doc.errors(*ERRORS)},
    )  # fmt: skip
    async def reconstruct(request: Request, name: str = doc.name_param()) -> Response:
        """Multipart images (+ optional sample_latent, sample_pixels, seed) -> PNG for one
        image, JSON {results: [{name, png | error}]} for several."""
        model = served.model_for(name, "reconstruct")
        files, f = await form(request, name, "reconstruct")
        seed = seed_of(f.seed)
        if model.geometry.spatial:
            work = per_image(files, model, "reconstruct", sample_latent=bool(getattr(f, "sample_latent", False)), seed=seed)
        else:
            work = per_image(files, model, "reconstruct", sample_latent=bool(f.sample_latent), sample_pixels=bool(f.sample_pixels), seed=seed)
        return image_answer(request, await served.compute(request, work), {"X-Vaesdk-Seed": str(seed)})

    @api.post(
        "/v1/models/{name}/edit", operation_id="edit", tags=["images"], dependencies=v1, response_class=JSONResponse, openapi_extra=forms["edit"],
        responses={**doc.image_answer(contract.ImageResults, "One upload: the edited image, PNG.", "several uploads: one entry each.", seeded=True), **doc.errors(*ERRORS)},
    )  # fmt: skip
    async def edit(request: Request, name: str = doc.name_param()) -> Response:
        """Multipart images + dim or direction, delta (+ sample_latent, sample_pixels, seed)
        -> PNG for one image, JSON for several."""
        model = served.model_for(name, "edit")
        files, f = await form(request, name, "edit")
        seed = seed_of(f.seed)
        if model.geometry.spatial:
            work = per_image(
                files, model, "edit", direction=direction_of(f.direction, model), delta=f.delta,
                sample_latent=bool(getattr(f, "sample_latent", False)), seed=seed,
            )  # fmt: skip
            return image_answer(request, await served.compute(request, work), {"X-Vaesdk-Seed": str(seed)})
        work = per_image(
            files, model, "edit", dim=f.dim, direction=getattr(f, "direction", None), delta=f.delta,
            sample_latent=bool(f.sample_latent), sample_pixels=bool(f.sample_pixels), seed=seed,
        )  # fmt: skip
        return image_answer(request, await served.compute(request, work), {"X-Vaesdk-Seed": str(seed)})

    @api.post(
        "/v1/models/{name}/encode", operation_id="encode", tags=["images"], dependencies=v1, response_model=contract.EncodeResults, openapi_extra=forms["encode"],
        responses=doc.errors(*ERRORS),
    )  # fmt: skip
    async def encode(request: Request, name: str = doc.name_param()) -> JSONResponse:
        """Multipart images -> JSON {results: [{name, mean, logvar} | {name, error}]} (logvar null for an autoencoder)."""
        model = served.model_for(name, "encode")
        files, _ = await form(request, name, "encode")
        if model.geometry.spatial:
            return JSONResponse({"results": await served.compute(request, latents_of(files, model))})
        logvar = model.kind == "vae"
        result = await served.compute(request, lambda: vaesdk.run_job(model, "embed", files, logvar=logvar, workers=1, max_pixels=limits.max_image_pixels))
        c = result.columns

        def record(row: int) -> dict[str, Any]:
            return {"mean": c["mean"][row].tolist(), "logvar": c["logvar"][row].tolist() if logvar else None}

        return JSONResponse({"results": job_results(result, record)})

    @api.post(
        "/v1/models/{name}/score", operation_id="score", tags=["images"], dependencies=v1, response_model=contract.ScoreResults, openapi_extra=forms["score"],
        responses=doc.errors(*ERRORS),
    )  # fmt: skip
    async def score(request: Request, name: str = doc.name_param()) -> JSONResponse:
        """Multipart images (+ k, seed) -> JSON per-image -ELBO and -IW bound in bits/dim, anomaly
        score and p-value: the same figures as `vae score` on the same files, with the same
        default k (vaesdk.DEFAULT_IW_SAMPLES)."""
        model = served.model_for(name, "score")
        files, f = await form(request, name, "score")
        model.validate("score", k=f.k, seed=f.seed)
        result = await served.compute(request, lambda: vaesdk.run_job(model, "score", files, k=f.k, seed=f.seed, workers=1, max_pixels=limits.max_image_pixels))
        report = frontend.score_report(model, result, k=f.k, seed=f.seed)
        scores = report.pop("scores")

        def record(row: int) -> dict[str, Any]:
            return {key: value for key, value in scores[row].items() if key != "file"}

        return JSONResponse({**report, "results": job_results(result, record)})

    @api.post(
        "/v1/models/{name}/embed", operation_id="embed", tags=["images"], dependencies=v1, response_class=JSONResponse, openapi_extra=forms["embed"],
        responses=doc.errors(*ERRORS),
    )  # fmt: skip
    async def embed(request: Request, name: str = doc.name_param()) -> JSONResponse:
        """Multipart images -> JSON {results: [{name, features} | {name, error}]}: the features
        of `vae embed`, per-channel means of each image's spatial latent, [C] (models with
        spatial latents; a flat model's features are its encode means)."""
        model = served.model_for(name, "embed")
        files, _ = await form(request, name, "embed")
        result = await served.compute(request, lambda: vaesdk.run_job(model, "embed", files, workers=1, max_pixels=limits.max_image_pixels))
        features = result.columns["mean"]
        return JSONResponse({"results": job_results(result, lambda row: {"features": features[row].tolist()})})

    return api
