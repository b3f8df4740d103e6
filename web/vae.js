// A vaesdk bundle in the browser: reads manifest.json, runs decoder.onnx (and encoder.onnx)
// with onnxruntime-web's wasm backend, and samples from the bundle's priors (N(0, I), the
// fitted mixtures and Gaussians; the default is the manifest's `latent.default_prior`). Everything runs
// client-side; the bundle format is described in docs/bundle-format.md.
//
//   const model = await loadBundle("models/fashion-mnist/");
//   const z = model.sample(4, { seed: 0 });           // Float32Array [4 * D]
//   const { pixels } = await model.decode(z);         // Uint8Array [4 * H * W * C], NHWC
//
// Pixels are the SDK's: round(clip(mean, 0, 1) * 255) of the decoder's mean.

/* global ort */

const STANDARD = "standard";

// ---- seeded random numbers: a small PRNG and Gaussian draws --------------------------------

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussians(random, count) {
  const out = new Float64Array(count);
  for (let i = 0; i < count; i += 2) {
    // Box-Muller; 1 - u keeps the logarithm finite.
    const r = Math.sqrt(-2 * Math.log(1 - random()));
    const theta = 2 * Math.PI * random();
    out[i] = r * Math.cos(theta);
    if (i + 1 < count) out[i + 1] = r * Math.sin(theta);
  }
  return out;
}

// ---- priors ----------------------------------------------------------------------------------
// Each prior becomes a sampler (n, random, temperature) -> Float32Array.

function gaussianSampler(dim, entry) {
  const mean = entry.mean;
  const chol = entry.cholesky; // lower triangle, row by row
  return (n, random, temperature) => {
    const z = new Float32Array(n * dim);
    for (let k = 0; k < n; k++) {
      const eps = gaussians(random, dim);
      for (let i = 0, row = 0; i < dim; i++, row += i) {
        let v = 0;
        for (let j = 0; j <= i; j++) v += chol[row + j] * eps[j];
        z[k * dim + i] = mean[i] + temperature * v;
      }
    }
    return z;
  };
}

function standardSampler(dim) {
  return (n, random, temperature) => Float32Array.from(gaussians(random, n * dim), (x) => x * temperature);
}

/** A Gaussian mixture from its stored arrays: weights [K], means [K, D], cholesky [K, D, D]
 * (lower triangles). Like the SDK: a component by its weight, then mean + temperature * L eps. */
function mixtureSampler(dim, { weights, means, cholesky }) {
  const k = weights.data.length;
  if (means.shape.join() !== `${k},${dim}` || cholesky.shape.join() !== `${k},${dim},${dim}`)
    throw new Error(`mixture arrays do not fit ${k} components of dimension ${dim}`);
  const cumulative = new Float64Array(k);
  weights.data.reduce((sum, w, i) => (cumulative[i] = sum + w), 0);
  return (n, random, temperature) => {
    const z = new Float32Array(n * dim);
    for (let s = 0; s < n; s++) {
      const u = random() * cumulative[k - 1];
      let c = 0;
      while (c < k - 1 && u >= cumulative[c]) c++;
      const eps = gaussians(random, dim);
      const base = c * dim * dim;
      for (let i = 0; i < dim; i++) {
        let v = 0;
        for (let j = 0; j <= i; j++) v += cholesky.data[base + i * dim + j] * eps[j];
        z[s * dim + i] = means.data[c * dim + i] + temperature * v;
      }
    }
    return z;
  };
}

/** The samplers of a manifest's priors, in the SDK's order: N(0, I) (VAEs), the mixtures
 * (their arrays already read, in `mixtures`), then the fitted Gaussians. */
function priorsOf(manifest, mixtures = {}) {
  const dim = manifest.latent.dim;
  const priors = new Map();
  if (manifest.kind === "vae") priors.set(STANDARD, standardSampler(dim));
  for (const name of Object.keys(mixtures).sort()) priors.set(name, mixtureSampler(dim, mixtures[name]));
  for (const name of Object.keys(manifest.latent.gaussians || {}).sort()) {
    priors.set(name, gaussianSampler(dim, manifest.latent.gaussians[name]));
  }
  return priors;
}

// ---- numpy's .npz: a zip of .npy arrays, stored uncompressed by numpy.savez -----------------

const ZIP_END = 0x06054b50;
const ZIP_CENTRAL = 0x02014b50;

function readNpy(buffer, label) {
  const bytes = new Uint8Array(buffer);
  if (bytes[0] !== 0x93 || String.fromCharCode(...bytes.subarray(1, 6)) !== "NUMPY") throw new Error(`${label} is not a .npy array`);
  const view = new DataView(buffer);
  const start = bytes[6] === 1 ? 10 : 12;
  const length = bytes[6] === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const header = new TextDecoder().decode(bytes.subarray(start, start + length));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  if (descr !== "<f8" || /'fortran_order':\s*True/.test(header))
    throw new Error(`${label}: the page reads little-endian float64 arrays in C order, got ${descr}`);
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] || "").split(",").filter((x) => x.trim()).map(Number);
  return { shape, data: new Float64Array(buffer.slice(start + length)) };
}

export function readNpz(buffer, label = "npz") {
  const view = new DataView(buffer);
  let end = buffer.byteLength - 22;
  while (end >= 0 && view.getUint32(end, true) !== ZIP_END) end--;
  if (end < 0) throw new Error(`${label} is not a zip archive`);
  const arrays = {};
  let at = view.getUint32(end + 16, true);
  for (let i = view.getUint16(end + 10, true); i > 0; i--) {
    if (view.getUint32(at, true) !== ZIP_CENTRAL) throw new Error(`${label}: broken zip directory`);
    const [method, size] = [view.getUint16(at + 10, true), view.getUint32(at + 20, true)];
    const [nameLength, extraLength, commentLength] = [28, 30, 32].map((o) => view.getUint16(at + o, true));
    const local = view.getUint32(at + 42, true);
    const name = new TextDecoder().decode(new Uint8Array(buffer, at + 46, nameLength));
    if (method !== 0) throw new Error(`${label}: ${name} is compressed; bundles store arrays uncompressed (numpy.savez)`);
    const data = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    arrays[name.replace(/\.npy$/, "")] = readNpy(buffer.slice(data, data + size), `${label}: ${name}`);
    at += 46 + nameLength + extraLength + commentLength;
  }
  return arrays;
}

async function checkDigest(buffer, entry, url) {
  if (buffer.byteLength !== entry.bytes) throw new Error(`${url} holds ${buffer.byteLength} bytes, the manifest says ${entry.bytes}`);
  if (!globalThis.crypto?.subtle) return; // only secure contexts (https, localhost) have it
  const hex = [...new Uint8Array(await crypto.subtle.digest("SHA-256", buffer))].map((b) => b.toString(16).padStart(2, "0")).join("");
  if (hex !== entry.sha256) throw new Error(`${url} does not match its sha256 in the manifest`);
}

// ---- the model -------------------------------------------------------------------------------

export class BundleModel {
  constructor(manifest, decoder, encoderUrl, mixtures = {}, headers = {}) {
    this.manifest = manifest;
    this.name = manifest.name;
    this.kind = manifest.kind;
    this.latentDim = manifest.latent.dim;
    this.height = manifest.image.height;
    this.width = manifest.image.width;
    this.channels = manifest.image.channels;
    this.priors = priorsOf(manifest, mixtures);
    this._decoder = decoder;
    this._encoder = null;
    this._encoderUrl = encoderUrl;
    this._headers = headers; // a served page's token: the encoder is fetched later, on the first drop
  }

  /** Latent dimensions, most used first (by the export's average KL per dimension). */
  dimsByUsage() {
    const kl = this.manifest.latent.kl_per_dim;
    const dims = [...Array(this.latentDim).keys()];
    return kl ? dims.sort((a, b) => kl[b] - kl[a] || a - b) : dims;
  }

  /** The prior `sample` uses by default: the manifest's choice, else N(0, I), else the first. */
  get defaultPrior() {
    const named = this.manifest.latent.default_prior;
    if (named && this.priors.has(named)) return named;
    return this.priors.has(STANDARD) ? STANDARD : [...this.priors.keys()][0];
  }

  /** n latents from a prior: Float32Array [n * D]. Seeded draws repeat in the browser (they
   * are not the Python SDK's numpy streams). */
  sample(n, { seed = Date.now(), prior = this.defaultPrior, temperature = 1 } = {}) {
    const draw = this.priors.get(prior);
    if (!draw) throw new Error(`unknown prior ${prior}; this model has: ${[...this.priors.keys()].join(", ")}`);
    return draw(n, mulberry32(seed), temperature);
  }

  /** Latents (Float32Array [N * D] or arrays of D numbers) -> {pixels: Uint8Array NHWC, n, height, width, channels}. */
  async decode(latents) {
    const z = latents instanceof Float32Array ? latents : Float32Array.from(latents.flat());
    const d = this.latentDim;
    if (z.length === 0 || z.length % d !== 0) throw new Error(`latents must hold N x ${d} numbers, got ${z.length}`);
    const n = z.length / d;
    const out = await this._decoder.run({ z: new ort.Tensor("float32", z, [n, d]) }, ["mean"]);
    const mean = out.mean.data; // NCHW in [0, 1] units
    const { height: h, width: w, channels: c } = this;
    const pixels = new Uint8Array(n * h * w * c);
    for (let k = 0; k < n; k++)
      for (let ch = 0; ch < c; ch++)
        for (let p = 0; p < h * w; p++) {
          const v = mean[((k * c + ch) * h * w) + p];
          pixels[(k * h * w + p) * c + ch] = Math.round(Math.min(1, Math.max(0, v)) * 255);
        }
    return { pixels, n, height: h, width: w, channels: c };
  }

  /** Model-sized pixels (Uint8Array NHWC, N images) -> posterior means, Float32Array [N * D]. */
  async encode(pixels) {
    if (!this._encoder) this._encoder = await createSession(this._encoderUrl, this._headers);
    const { height: h, width: w, channels: c } = this;
    const n = pixels.length / (h * w * c);
    const x = new Float32Array(pixels.length);
    for (let k = 0; k < n; k++)
      for (let ch = 0; ch < c; ch++)
        for (let p = 0; p < h * w; p++) x[((k * c + ch) * h * w) + p] = pixels[(k * h * w + p) * c + ch] / 255;
    const out = await this._encoder.run({ x: new ort.Tensor("float32", x, [n, c, h, w]) }, ["mean"]);
    return Float32Array.from(out.mean.data);
  }
}

async function createSession(url, headers = {}) {
  const response = await fetch(url, { headers });
  if (!response.ok) throw new Error(`cannot load ${url}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  return ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
}

/** Load a bundle from a base URL that holds manifest.json and the model files. */
export async function loadBundle(base, { headers = {} } = {}) {
  if (typeof ort === "undefined") throw new Error("onnxruntime-web is not loaded (run `npm ci` in web/)");
  // One thread: worker threads need cross-origin isolation, which a plain static host lacks.
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL("vendor/", document.baseURI).href;
  const root = base.endsWith("/") ? base : `${base}/`;
  const response = await fetch(`${root}manifest.json`, { headers });
  if (!response.ok) throw new Error(`no bundle at ${root}: manifest.json gave HTTP ${response.status}`);
  const manifest = await response.json();
  if (manifest.format !== "vaesdk-bundle") throw new Error(`${root}manifest.json is not a vaesdk bundle manifest`);
  // Version 2 added the low-rank factor output (the page decodes means only) and mixture priors.
  if (manifest.format_version > 2) throw new Error(`bundle format_version ${manifest.format_version} is newer than this page reads (2)`);
  const decoder = await createSession(`${root}${manifest.decoder.file}`, headers);
  const mixtures = {};
  for (const [name, entry] of Object.entries(manifest.latent.mixtures || {})) {
    const url = `${root}${entry.file}`;
    const file = await fetch(url, { headers });
    if (!file.ok) throw new Error(`cannot load ${url}: HTTP ${file.status}`);
    const buffer = await file.arrayBuffer();
    await checkDigest(buffer, entry, url);
    mixtures[name] = readNpz(buffer, entry.file);
  }
  return new BundleModel(manifest, decoder, `${root}${manifest.encoder.file}`, mixtures, headers);
}

/** Image file -> model-sized pixels (Uint8Array HWC), by the SDK's policy: transparency on
 * black, longer side scaled to the model's size, centred on a black square, luma for one
 * channel. The browser's resampling differs slightly from Pillow's Lanczos. */
export async function imageToPixels(file, model) {
  const bitmap = await createImageBitmap(file);
  const { height: size, channels: c } = model;
  const canvas = new OffscreenCanvas(size, size);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "black";
  ctx.fillRect(0, 0, size, size);
  const scale = size / Math.max(bitmap.width, bitmap.height);
  const w = Math.max(1, Math.round(bitmap.width * scale));
  const h = Math.max(1, Math.round(bitmap.height * scale));
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, Math.floor((size - w) / 2), Math.floor((size - h) / 2), w, h);
  const rgba = ctx.getImageData(0, 0, size, size).data;
  const out = new Uint8Array(size * size * c);
  for (let p = 0; p < size * size; p++) {
    const [r, g, b] = [rgba[4 * p], rgba[4 * p + 1], rgba[4 * p + 2]];
    if (c === 1) out[p] = Math.round((r * 299 + g * 587 + b * 114) / 1000);
    else out.set([r, g, b], 3 * p);
  }
  return out;
}
