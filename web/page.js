// The page: sample from a prior, move one slider per latent dimension (most used first),
// drop an image to encode it, all decoded in the page. For a bundle with spatial latents (the
// autoencoder of a latent-diffusion model): drop an image to reconstruct it at its own size, or
// decode N(0, I) noise at a chosen size. `window.vae` is the page's small API:
//   await vae.ready; const { pixels } = await vae.decode([[...D numbers]]);
//   const { pixels } = await vae.decode(z, { height: 64, width: 96 });   // spatial latents [N * C * h * w]
import { MAX_IMAGE_SIDE, imageAtOwnSize, imageToPixels, loadBundle, seededNoise } from "./vae.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? { Authorization: `Bearer ${token}` } : {};

/** Where the bundle is: ?bundle=URL; else, under `vae serve`, the served model (?model=NAME or
 * the first), with the names of all served models for the picker; else the folder this page
 * sits in (the page copied next to manifest.json). */
async function bundleBase() {
  if (params.get("bundle")) return { base: params.get("bundle"), served: [] };
  try {
    const response = await fetch("v1/models", { headers });
    if (response.ok) {
      const served = (await response.json()).models.map((m) => m.name);
      const wanted = served.includes(params.get("model")) ? params.get("model") : served[0];
      return { base: `v1/models/${encodeURIComponent(wanted)}/files/`, served, wanted };
    }
  } catch (e) {
    // not served by `vae serve`: static files
  }
  return { base: "./", served: [] };
}

/** The model picker: one entry per served model; choosing one reloads the page with ?model=. */
function fillModelPicker(served, wanted) {
  $("model-picker").hidden = served.length < 2;
  for (const name of served) $("model").add(new Option(name, name, false, name === wanted));
  $("model").addEventListener("change", () => {
    const next = new URLSearchParams(location.search);
    next.set("model", $("model").value);
    next.delete("prior");
    location.search = next.toString();
  });
}

function draw(canvas, pixels, offset, model) {
  const { height: h, width: w, channels: c } = model;
  const image = new ImageData(w, h);
  for (let p = 0; p < h * w; p++) {
    const base = offset + p * c;
    image.data.set(c === 1 ? [pixels[base], pixels[base], pixels[base], 255] : [pixels[base], pixels[base + 1], pixels[base + 2], 255], 4 * p);
  }
  const small = new OffscreenCanvas(w, h);
  small.getContext("2d").putImageData(image, 0, 0);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
}

/** Show an image on a canvas at a whole multiple of its size, its longer side at most about `side`. */
function showImage(canvas, image, side = 512) {
  const scale = Math.max(1, Math.floor(side / Math.max(image.height, image.width)));
  Object.assign(canvas, { width: image.width * scale, height: image.height * scale });
  draw(canvas, image.pixels, 0, image);
}

const PAGE_MAX_SIDE = 1024; // the page's bound on a decode's size, for the browser's memory
const PAGE_TILE = 256; // about this many pixels a side, a multiple of the model's step

/** The page of a bundle with spatial latents: no prior to sample, so it reconstructs dropped
 * images at their own size and decodes N(0, I) noise at a chosen size. */
async function spatialPage(model) {
  const g = model.geometry;
  const size = g.fixedSize ? `${g.height}x${g.width}` : `any size, sides multiples of ${g.multiple}`;
  $("model-name").textContent = `${model.name} (${model.kind}, ${size}, latents [${g.latentChannels}, H/${g.factor}, W/${g.factor}])`;
  for (const id of ["prior-picker", "temperature-picker", "sample", "grid", "sliders"]) $(id).hidden = true;
  $("size-controls").hidden = false;
  $("drop-text").textContent = "Drop an image here (or click) to reconstruct it at its own size";
  for (const [id, value] of [["height", g.height], ["width", g.width]]) {
    const step = g.fixedSize ? 1 : g.multiple;
    Object.assign($(id), { min: step, step, max: PAGE_MAX_SIDE, value: value ?? Math.max(64, step) - (Math.max(64, step) % step), disabled: g.fixedSize });
  }
  const step = Math.max(g.multiple, g.factor);
  const tile = Math.max(4 * step, Math.round(PAGE_TILE / step) * step);
  $("tile-side").textContent = String(tile);
  const tileSize = () => ($("tiled").checked ? tile : undefined);

  async function decodeNoise() {
    const [height, width] = [Number($("height").value), Number($("width").value)];
    if (height > PAGE_MAX_SIDE || width > PAGE_MAX_SIDE) throw new Error(`the page decodes sides up to ${PAGE_MAX_SIDE}, got ${height}x${width}; the Python SDK takes up to ${MAX_IMAGE_SIDE}`);
    g.checkSize(height, width);
    const [c, h, w] = g.latentShape(height, width);
    // Standard normals in the latent-diffusion model's units, brought to the autoencoder's.
    const noise = seededNoise(Number($("seed").value));
    const z = model.fromDiffusion(Float32Array.from({ length: c * h * w }, () => noise.normal()));
    const image = await model.decode(z, { height, width, tileSize: tileSize() });
    $("original-figure").hidden = true;
    showImage($("current"), image);
    $("current-caption").textContent = `N(0, I) noise [${c}, ${h}, ${w}] decoded at ${height}x${width}: the decoder at this size, not a sample of the model`;
    $("status").textContent = `decoded noise at ${height}x${width}`;
  }

  async function reconstructFile(file) {
    $("status").textContent = `reconstructing ${file.name}...`;
    const image = g.fixedSize ? { pixels: await imageToPixels(file, model), height: g.height, width: g.width } : await imageAtOwnSize(file, model, { maxSide: 512 });
    const { height, width } = image;
    const out = await model.reconstruct(image.pixels, { height, width, tileSize: tileSize() });
    $("original-figure").hidden = false;
    showImage($("original"), { ...image, n: 1, channels: model.channels });
    showImage($("current"), out);
    [$("height").value, $("width").value] = [height, width];
    $("current-caption").textContent = `reconstruction at ${height}x${width} (latent [${g.latentShape(height, width).join(", ")}])`;
    $("status").textContent = `${file.name} reconstructed at ${height}x${width}`;
    return out;
  }

  const report = (e) => ($("status").textContent = `error: ${e.message}`);
  $("decode-noise").addEventListener("click", () => decodeNoise().catch(report));
  onImage((file) => reconstructFile(file).catch(report));
  await decodeNoise();
  $("status").textContent = `ready: decode noise at a chosen size, or drop an image to reconstruct it`;
  return model;
}

/** Run `use(file)` for an image chosen in the file picker or dropped on the drop zone. */
function onImage(use) {
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => $("file").files[0] && use($("file").files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) use(e.dataTransfer.files[0]);
  });
}

async function main() {
  const { base, served, wanted } = await bundleBase();
  fillModelPicker(served, wanted);
  const model = await loadBundle(base, { headers });
  if (model.geometry.spatial) return spatialPage(model);
  const firstPrior = model.priors.has(params.get("prior")) ? params.get("prior") : model.defaultPrior;
  let current = model.sample(1, { seed: 0, prior: firstPrior });
  $("model-name").textContent = `${model.name} (${model.kind}, ${model.latentDim} latent dimensions)`;
  $("current").height = Math.round(($("current").width * model.height) / model.width); // a fixed non-square size keeps its aspect
  for (const name of model.priors.keys()) $("prior").add(new Option(name, name, false, name === firstPrior));

  const sliders = new Map();
  const kl = model.manifest.latent.kl_per_dim;
  for (const d of model.dimsByUsage()) {
    const label = document.createElement("label");
    const input = Object.assign(document.createElement("input"), { type: "range", min: -4, max: 4, step: 0.05 });
    label.append(`z${d}${kl ? ` (${kl[d].toFixed(2)})` : ""}`, input);
    input.addEventListener("input", () => {
      current[d] = Number(input.value);
      render();
    });
    sliders.set(d, input);
    $("sliders").append(label);
  }

  let pending = null;
  async function render() {
    // Coalesce slider moves: decode the latest latent once the previous decode ends.
    if (pending) return;
    pending = (async () => {
      const { pixels } = await model.decode(current);
      draw($("current"), pixels, 0, model);
    })();
    await pending;
    pending = null;
  }
  function show(z) {
    current = Float32Array.from(z);
    for (const [d, input] of sliders) input.value = String(current[d]);
    return render();
  }

  async function sampleGrid() {
    const n = 16;
    const z = model.sample(n, { seed: Number($("seed").value), prior: $("prior").value, temperature: Number($("temperature").value) });
    const { pixels } = await model.decode(z);
    $("grid").replaceChildren();
    const size = model.height * model.width * model.channels;
    for (let k = 0; k < n; k++) {
      // Small images shown at twice their size, larger ones at their own.
      const cell = model.width < 56 ? 2 * model.width : model.width;
      const canvas = Object.assign(document.createElement("canvas"), { width: cell, height: Math.round((cell * model.height) / model.width) });
      draw(canvas, pixels, k * size, model);
      canvas.addEventListener("click", () => show(z.subarray(k * model.latentDim, (k + 1) * model.latentDim)));
      $("grid").append(canvas);
    }
    await show(z.subarray(0, model.latentDim));
  }

  async function encodeFile(file) {
    $("status").textContent = `encoding ${file.name}...`;
    const mean = await model.encode(await imageToPixels(file, model));
    await show(mean);
    $("status").textContent = `${file.name} encoded; move the sliders to edit it`;
  }

  $("sample").addEventListener("click", sampleGrid);
  onImage(encodeFile);

  await sampleGrid();
  $("status").textContent = `ready: ${model.priors.size} prior(s); sample, click a sample, move sliders, or drop an image`;
  return model;
}

const ready = main().catch((e) => {
  $("status").textContent = `error: ${e.message}`;
  throw e;
});

window.vae = {
  ready,
  /** latents (arrays of D numbers, or a Float32Array N*D; spatial latents: N*C*h*w numbers with
   * options {height, width, tileSize}) -> {pixels: Uint8Array NHWC, n, height, width, channels} */
  decode: async (latents, options) => (await ready).decode(latents, options),
  /** pixels (Uint8Array NHWC; model-sized, or of options {height, width} for spatial latents) -> Float32Array of posterior means */
  encode: async (pixels, options) => (await ready).encode(pixels, options),
  /** spatial latents only: pixels of options {height, width} -> their reconstruction, as decode gives */
  reconstruct: async (pixels, options) => (await ready).reconstruct(pixels, options),
  /** n latents from a prior: {seed, prior, temperature} */
  sample: async (n, options) => (await ready).sample(n, options),
};
