// The page: sample from a prior, move one slider per latent dimension (most used first),
// drop an image to encode it, all decoded in the page. `window.vae` is the page's small API:
//   await vae.ready; const { pixels } = await vae.decode([[...D numbers]]);
import { imageToPixels, loadBundle } from "./vae.js";

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

async function main() {
  const { base, served, wanted } = await bundleBase();
  fillModelPicker(served, wanted);
  const model = await loadBundle(base, { headers });
  const firstPrior = model.priors.has(params.get("prior")) ? params.get("prior") : model.defaultPrior;
  let current = model.sample(1, { seed: 0, prior: firstPrior });
  $("model-name").textContent = `${model.name} (${model.kind}, ${model.latentDim} latent dimensions)`;
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
      const canvas = Object.assign(document.createElement("canvas"), { width: cell, height: cell });
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
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => $("file").files[0] && encodeFile($("file").files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) encodeFile(e.dataTransfer.files[0]);
  });

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
  /** latents (arrays of D numbers, or a Float32Array N*D) -> {pixels: Uint8Array NHWC, n, height, width, channels} */
  decode: async (latents) => (await ready).decode(latents),
  /** model-sized pixels (Uint8Array NHWC) -> Float32Array of posterior means */
  encode: async (pixels) => (await ready).encode(pixels),
  /** n latents from a prior: {seed, prior, temperature} */
  sample: async (n, options) => (await ready).sample(n, options),
};
