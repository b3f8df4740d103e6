// A vaesdk bundle in the browser: reads manifest.json, runs decoder.onnx (and encoder.onnx)
// with onnxruntime-web's wasm backend, and samples from the bundle's priors (N(0, I), the
// fitted mixtures and Gaussians; the default is the manifest's `latent.default_prior`). Everything runs
// client-side; the bundle format is described in docs/bundle-format.md.
//
//   const model = await loadBundle("models/fashion-mnist/");
//   const z = model.sample(4, { seed: 0 });           // Float32Array [4 * D]
//   const { pixels } = await model.decode(z);         // Uint8Array [4 * H * W * C], NHWC
//
// A bundle with spatial latents [C, H/f, W/f] (format version 3: the autoencoders of latent
// diffusion) gives a `SpatialBundleModel`, which decodes and encodes at a size it is given and
// has no prior to sample:
//
//   const model = await loadBundle("tiny-kl/");
//   const { mean } = await model.encodePosterior(pixels, { height: 64, width: 96 });  // [N * C * 16 * 24]
//   const image = await model.decode(mean, { height: 64, width: 96, tileSize: 32 }); // tiled and blended
//
// Every rule here is the format's (docs/bundle-format.md), held to the conformance vectors of
// conformance/v2/ and conformance/v3/ under Node (conformance/run-vae-js.mjs): the draws take their noise as input
// (`noiseFrom`), so given the same standard normals and uniforms the page's latents and pixels
// are the Python SDK's; pixels are the SDK's conversion of the decoder's mean, bit for bit.

/* global ort */

const STANDARD = "standard";

// ---- errors ----------------------------------------------------------------------------------

/** A bundle the format refuses. `category` is the format's name for the rule it breaks: "json",
 * "version", "manifest", "missing-file", "integrity", "graph", "prior-file" or "non-finite". */
export class BundleError extends Error {
  constructor(category, message) {
    super(message);
    this.name = "BundleError";
    this.category = category;
  }
}

/** An operation a model refuses: `category` "unsupported" (the model has no such operation:
 * sampling spatial latents, drawing pixels from a deterministic decoder) or "argument" (an
 * input of the wrong size or shape). */
export class OperationError extends Error {
  constructor(category, message) {
    super(message);
    this.name = "OperationError";
    this.category = category;
  }
}

// ---- noise: the draws take standard normals and uniforms from a source ------------------------

/** A noise source from given numbers: `normals` (standard normals, used in order, each rounded
 * to float32 as the SDK draws them) and `uniforms` (in [0, 1), for a mixture's components). */
export function noiseFrom(normals = [], uniforms = []) {
  let i = 0;
  let j = 0;
  return {
    normal() {
      if (i >= normals.length) throw new Error(`the noise ran out after ${normals.length} normals`);
      return Math.fround(normals[i++]);
    },
    uniform() {
      if (j >= uniforms.length) throw new Error(`the noise ran out after ${uniforms.length} uniforms`);
      return uniforms[j++];
    },
    get used() {
      return { normals: i, uniforms: j };
    },
  };
}

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

/** A seeded noise source for the page (a small PRNG and Box-Muller): repeatable in the
 * browser, but not numpy's streams; pass `noiseFrom(...)` to reproduce the SDK's draws. */
export function seededNoise(seed) {
  const random = mulberry32(seed);
  let spare = null;
  return {
    normal() {
      if (spare !== null) {
        const out = spare;
        spare = null;
        return out;
      }
      const r = Math.sqrt(-2 * Math.log(1 - random())); // 1 - u keeps the logarithm finite
      const theta = 2 * Math.PI * random();
      spare = Math.fround(r * Math.sin(theta));
      return Math.fround(r * Math.cos(theta));
    },
    uniform: random,
  };
}

// ---- priors (docs/bundle-format.md, "Priors and their draws") ----------------------------------

const MAX_TRUNCATION_ROUNDS = 1000;

/** eps [n * dim]: standard normals, truncated by redrawing, then times temperature in float32. */
function scaledNormals(n, dim, noise, temperature, truncation) {
  const eps = new Float32Array(n * dim);
  for (let i = 0; i < eps.length; i++) eps[i] = noise.normal();
  if (truncation !== null && truncation !== undefined) {
    truncation = Math.fround(truncation); // compared and clamped in float32, as numpy does
    let round = 0;
    for (; round < MAX_TRUNCATION_ROUNDS; round++) {
      let bad = false;
      for (let i = 0; i < eps.length; i++) {
        if (Math.abs(eps[i]) > truncation) {
          bad = true;
          break;
        }
      }
      if (!bad) break;
      // Out-of-range values, in row-major order, take the next normals of the stream.
      const out = [];
      for (let i = 0; i < eps.length; i++) if (Math.abs(eps[i]) > truncation) out.push(i);
      for (const i of out) eps[i] = noise.normal();
    }
    if (round === MAX_TRUNCATION_ROUNDS) for (let i = 0; i < eps.length; i++) eps[i] = Math.min(truncation, Math.max(-truncation, eps[i]));
  }
  const t = Math.fround(temperature);
  for (let i = 0; i < eps.length; i++) eps[i] = Math.fround(eps[i] * t);
  return eps;
}

// Each prior becomes a draw (n, noise, temperature, truncation) -> Float32Array [n * dim].

function standardDraw(dim) {
  return (n, noise, temperature, truncation) => scaledNormals(n, dim, noise, temperature, truncation);
}

function gaussianDraw(dim, entry) {
  const mean = entry.mean;
  const chol = entry.cholesky; // lower triangle, row by row
  return (n, noise, temperature, truncation) => {
    const eps = scaledNormals(n, dim, noise, temperature, truncation);
    const z = new Float32Array(n * dim);
    for (let k = 0; k < n; k++) {
      for (let i = 0, row = 0; i < dim; i++, row += i) {
        let v = 0;
        for (let j = 0; j <= i; j++) v += chol[row + j] * eps[k * dim + j];
        z[k * dim + i] = mean[i] + v;
      }
    }
    return z;
  };
}

/** A Gaussian mixture from its stored arrays: weights [K], means [K, D], and cholesky [K, D, D]
 * (or scales [K, D], the standard deviations of a diagonal mixture). All n components first
 * (one uniform each), then the normals: mean_c + L_c (temperature eps). */
function mixtureDraw(dim, { weights, means, cholesky, scales }) {
  const k = weights.data.length;
  const cdf = new Float64Array(k);
  weights.data.reduce((sum, w, i) => (cdf[i] = sum + w), 0);
  const last = cdf[k - 1];
  for (let i = 0; i < k; i++) cdf[i] /= last;
  return (n, noise, temperature, truncation) => {
    const comps = new Int32Array(n);
    for (let s = 0; s < n; s++) {
      const u = noise.uniform();
      let c = 0;
      while (c < k - 1 && cdf[c] <= u) c++; // the first component whose cumulative weight exceeds u
      comps[s] = c;
    }
    const eps = scaledNormals(n, dim, noise, temperature, truncation);
    const z = new Float32Array(n * dim);
    for (let s = 0; s < n; s++) {
      if (scales) {
        for (let i = 0; i < dim; i++) z[s * dim + i] = means.data[comps[s] * dim + i] + scales.data[comps[s] * dim + i] * eps[s * dim + i];
        continue;
      }
      const base = comps[s] * dim * dim;
      for (let i = 0; i < dim; i++) {
        let v = 0;
        for (let j = 0; j <= i; j++) v += cholesky.data[base + i * dim + j] * eps[s * dim + j];
        z[s * dim + i] = means.data[comps[s] * dim + i] + v;
      }
    }
    return z;
  };
}

/** The draws of a manifest's priors, in the format's order: N(0, I) (VAEs), the mixtures
 * (their arrays already read, in `mixtures`), then the fitted Gaussians, each group by name. */
function priorsOf(manifest, mixtures = {}) {
  const dim = manifest.latent.dim;
  const priors = new Map();
  if (manifest.kind === "vae") priors.set(STANDARD, standardDraw(dim));
  for (const name of Object.keys(mixtures).sort()) priors.set(name, mixtureDraw(dim, mixtures[name]));
  for (const name of Object.keys(manifest.latent.gaussians || {}).sort()) {
    priors.set(name, gaussianDraw(dim, manifest.latent.gaussians[name]));
  }
  return priors;
}

/** The prior names of a manifest and its default, by the format's rule: N(0, I) is the prior
 * of a vae with flat latents only; spatial latents name their priors as an ae does. */
export function priorNames(manifest) {
  const own = manifest.kind === "vae" && !("factor" in manifest.latent);
  const names = [
    ...(own ? [STANDARD] : []),
    ...Object.keys(manifest.latent.mixtures || {}).sort(),
    ...Object.keys(manifest.latent.gaussians || {}).sort(),
  ];
  const named = manifest.latent.default_prior;
  return { names, defaultPrior: named ?? (own ? STANDARD : names[0] ?? null) };
}

/** A posterior draw: mean + exp(logvar / 2) * eps, in float32 as the SDK computes it. */
export function posteriorSample(mean, logvar, eps) {
  const z = new Float32Array(mean.length);
  for (let i = 0; i < z.length; i++) {
    const sd = Math.fround(Math.exp(Math.fround(0.5 * logvar[i])));
    z[i] = mean[i] + Math.fround(sd * Math.fround(eps[i]));
  }
  return z;
}

// ---- pixels (docs/bundle-format.md, "Pixels in and out") ---------------------------------------

const INV_255 = Math.fround(1 / 255);
const F255 = Math.fround(255);

function roundHalfEven(v) {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

const UNIT_RANGE = [0, 1];
const isUnit = ([lo, hi]) => lo === 0 && hi === 1;

/** Decoder means [n, c, h, w] in the pixel range [lo, hi] (image.range; [0, 1] unless given)
 * -> uint8 [n, h, w, c]: to [0, 1] units as float32((m - lo) / (hi - lo)), clip to [0, 1],
 * multiply by 255 in float32, round half to even. Any NaN or infinity refuses the whole batch. */
export function toPixels(mean, n, c, h, w, range = UNIT_RANGE) {
  const pixels = new Uint8Array(n * h * w * c);
  for (let i = 0; i < mean.length; i++) {
    if (!Number.isFinite(mean[i])) throw new BundleError("non-finite", "the decoder produced NaN or infinite pixels; the model file is broken");
  }
  const [lo, hi] = range;
  const unit = isUnit(range) ? (m) => m : (m) => Math.fround(Math.fround(m - lo) / (hi - lo));
  for (let k = 0; k < n; k++)
    for (let ch = 0; ch < c; ch++)
      for (let p = 0; p < h * w; p++) {
        const v = Math.fround(Math.min(1, Math.max(0, unit(mean[(k * c + ch) * h * w + p]))));
        pixels[(k * h * w + p) * c + ch] = roundHalfEven(Math.fround(v * F255));
      }
  return pixels;
}

/** uint8 [n, h, w, c] -> the encoder's input [n, c, h, w] in the pixel range [lo, hi]: pixel
 * times float32(1/255), in float32, then for [-1, 1] float32(u * 2 - 1) (the doubling is exact). */
export function fromPixels(pixels, n, c, h, w, range = UNIT_RANGE) {
  const x = new Float32Array(pixels.length);
  const [lo, hi] = range;
  const units = isUnit(range) ? (u) => u : (u) => Math.fround(Math.fround(u * (hi - lo)) + lo);
  for (let k = 0; k < n; k++)
    for (let ch = 0; ch < c; ch++)
      for (let p = 0; p < h * w; p++) x[(k * c + ch) * h * w + p] = units(Math.fround(pixels[(k * h * w + p) * c + ch] * INV_255));
  return x;
}

// ---- latent-diffusion units (docs/bundle-format.md, "Latent-diffusion units and channel statistics")

/** The autoencoder's latents -> a latent-diffusion model's: float32((z - shift) * scale). */
export function toDiffusion(z, scalingFactor = 1, shiftFactor = 0) {
  const [s, t] = [Math.fround(scalingFactor), Math.fround(shiftFactor)];
  return Float32Array.from(z, (v) => Math.fround(Math.fround(v - t) * s));
}

/** A latent-diffusion model's latents -> the autoencoder's: float32(z / scale + shift). */
export function fromDiffusion(z, scalingFactor = 1, shiftFactor = 0) {
  const [s, t] = [Math.fround(scalingFactor), Math.fround(shiftFactor)];
  return Float32Array.from(z, (v) => Math.fround(Math.fround(v / s) + t));
}

// ---- tiles: a large latent (or image) in overlapping tiles, blended (vaesdk/maths/tiles.py) ------
//
// An axis of length n is cut into tiles of length t overlapping by at least o: starts 0, t - o,
// 2(t - o), ... and a last tile flush with the end. Each tile's output is weighted by a ramp
// rising linearly across the part it shares with a neighbour (flat at the input's own edges);
// the outputs are summed, in the plan's order, and divided by the summed weights, all in float32.

/** Tile starts along an axis of length n: tiles of `tile` overlapping by at least `overlap`. */
export function tileStarts(n, tile, overlap) {
  if (n <= tile) return [0];
  const step = tile - overlap;
  if (step < 1) throw new OperationError("argument", `a tile of ${tile} with an overlap of ${overlap} never advances; use an overlap below the tile`);
  const out = [];
  for (let s = 0; s < n - tile; s += step) out.push(s);
  out.push(n - tile);
  return out;
}

/** A tile's weights along one axis: rising over `fade` cells on a side with a neighbour. */
export function tileRamp(length, fade, left, right) {
  const w = new Float32Array(length).fill(1);
  for (let i = 0; i < fade; i++) {
    const edge = Math.fround(Math.fround(i + 0.5) / fade);
    if (left) w[i] = Math.min(w[i], edge);
    if (right) w[length - 1 - i] = Math.min(w[length - 1 - i], edge);
  }
  return w;
}

/** The tiles covering an input of height x width, row by row: {y, x, h, w} and which sides
 * (top, bottom, left, right) it shares with a neighbour. */
export function tilePlan(height, width, tile, overlap) {
  const ys = tileStarts(height, tile, overlap);
  const xs = tileStarts(width, tile, overlap);
  const [th, tw] = [Math.min(tile, height), Math.min(tile, width)];
  return ys.flatMap((y, i) => xs.map((x, j) => ({ y, x, h: th, w: tw, top: i > 0, bottom: i < ys.length - 1, left: j > 0, right: j < xs.length - 1 })));
}

/** Run `run` (a tile [1, c, h, w] as a Float32Array -> a Promise of outputs, Float32Arrays
 * [1, c', h*num/den, w*num/den]) over the tiles of one input x [1, c, height, width] and blend
 * its outputs: Float32Arrays [1, c', height*num/den, width*num/den]. A decoder has num = f,
 * den = 1; an encoder num = 1, den = f (its tile and overlap multiples of f). */
export async function runTiled(x, [c, height, width], run, tile, overlap, num = 1, den = 1) {
  const [outH, outW] = [Math.floor((height * num) / den), Math.floor((width * num) / den)];
  const fade = Math.floor((overlap * num) / den);
  const total = new Float32Array(outH * outW);
  let acc = null;
  for (const t of tilePlan(height, width, tile, overlap)) {
    const part = new Float32Array(c * t.h * t.w);
    for (let ch = 0; ch < c; ch++)
      for (let i = 0; i < t.h; i++) part.set(x.subarray((ch * height + t.y + i) * width + t.x, (ch * height + t.y + i) * width + t.x + t.w), (ch * t.h + i) * t.w);
    const outs = await run(part, t);
    const [oy, ox, oh, ow] = [Math.floor((t.y * num) / den), Math.floor((t.x * num) / den), Math.floor((t.h * num) / den), Math.floor((t.w * num) / den)];
    const wy = tileRamp(oh, fade, t.top, t.bottom);
    const wx = tileRamp(ow, fade, t.left, t.right);
    acc ??= outs.map((o) => new Float32Array((o.length / (oh * ow)) * outH * outW));
    outs.forEach((o, k) => {
      for (let ch = 0; ch < o.length / (oh * ow); ch++)
        for (let i = 0; i < oh; i++)
          for (let j = 0; j < ow; j++) {
            const at = (ch * outH + oy + i) * outW + ox + j;
            acc[k][at] = Math.fround(acc[k][at] + Math.fround(o[(ch * oh + i) * ow + j] * Math.fround(wy[i] * wx[j])));
          }
    });
    for (let i = 0; i < oh; i++) for (let j = 0; j < ow; j++) total[(oy + i) * outW + ox + j] = Math.fround(total[(oy + i) * outW + ox + j] + Math.fround(wy[i] * wx[j]));
  }
  for (const a of acc) for (let i = 0; i < a.length; i++) a[i] = Math.fround(a[i] / total[i % (outH * outW)]);
  return acc;
}

// ---- manifest.json (docs/bundle-format.md, "Reading manifest.json") -----------------------------

const TOKEN = /\s*(?:("(?:[^"\\]|\\.)*")|(-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?)|([{}[\]:,])|(true|false|null))/y;
const INTEGER_FIELDS =
  /^(?:format_version|image\.(?:height|width|channels|multiple)|latent\.(?:dim|channels|factor)|likelihood\.rank|(?:encoder|decoder|variants\.fp16\.decoder)\.bytes|latent\.mixtures\..+\.bytes|(?:encoder|decoder)\.(?:inputs|outputs)\.\d+\.shape\.\d+|anomaly\.calibration\.n)$/;

/** Walk valid JSON text: refuse a key repeated in one object, and return the paths of the
 * numbers written with a fraction or an exponent (JSON.parse makes 28.0 and 28 the same). */
function scanJson(text) {
  const stack = [];
  const spelled = new Set();
  const here = () => stack.map((f) => (f.object ? f.key : f.index)).join(".");
  TOKEN.lastIndex = 0;
  while (TOKEN.lastIndex < text.length) {
    const m = TOKEN.exec(text);
    if (!m) break; // trailing whitespace
    const top = stack[stack.length - 1];
    const [, string, number, punct] = m;
    if (string !== undefined && top?.object && top.expectKey) {
      const key = JSON.parse(string);
      if (top.keys.has(key)) throw new BundleError("json", `manifest.json is not valid: the key ${JSON.stringify(key)} appears twice in one object; write each key once`);
      top.keys.add(key);
      top.key = key;
      top.expectKey = false;
    } else if (number !== undefined) {
      if (/[.eE]/.test(number)) spelled.add(here());
    } else if (punct === "{") {
      stack.push({ object: true, keys: new Set(), key: null, expectKey: true });
    } else if (punct === "[") {
      stack.push({ object: false, index: 0 });
    } else if (punct === "}" || punct === "]") {
      stack.pop();
    } else if (punct === ",") {
      if (top.object) top.expectKey = true;
      else top.index++;
    }
  }
  return spelled;
}

/** manifest.json's bytes -> its JSON value, read as the format reads it: UTF-8 without a
 * byte-order mark, no repeated key, no NaN or Infinity (JSON.parse refuses those), and integer
 * fields written as integers. */
export function parseManifest(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) throw new BundleError("json", "manifest.json starts with a UTF-8 byte-order mark; save it as UTF-8 without one");
  let text;
  let manifest;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
    manifest = JSON.parse(text);
  } catch (e) {
    throw new BundleError("json", `manifest.json is not valid JSON (${e.message})`);
  }
  for (const path of scanJson(text)) {
    if (INTEGER_FIELDS.test(path)) throw new BundleError("manifest", `invalid manifest: ${path} must be an integer written without a fraction or exponent`);
  }
  return manifest;
}

export const FORMAT_VERSION = 3;

/** The format and version checks, made before anything else is read. */
export function checkVersion(manifest) {
  if (manifest === null || typeof manifest !== "object" || Array.isArray(manifest)) throw new BundleError("manifest", "invalid manifest: the top level must be a JSON object");
  if (manifest.format !== "vaesdk-bundle") throw new BundleError("manifest", `invalid manifest: format must be 'vaesdk-bundle', got ${JSON.stringify(manifest.format)} (is this a vaesdk bundle?)`);
  const v = manifest.format_version;
  if (Number.isInteger(v) && v > FORMAT_VERSION) throw new BundleError("version", `bundle format_version ${v} is newer than this page reads (${FORMAT_VERSION})`);
  if (!Number.isInteger(v) || v < 1) throw new BundleError("manifest", `invalid manifest: format_version must be an integer 1..${FORMAT_VERSION}, got ${JSON.stringify(v)}`);
}

// ---- geometry: the image and latent shapes (docs/bundle-format.md, "Shapes") ---------------------

export const MAX_IMAGE_SIDE = 4096;
const MAX_LATENT_DIM = 65536;
const MAX_LATENT_CHANNELS = 1024;
const MAX_FACTOR = 64;
const PIXEL_RANGES = [[0, 1], [-1, 1]];

/** The image and latent shapes of one model, from its manifest (vaesdk/bundle/geometry.py):
 * channels; a fixed size (height, width) or a free one (height and width null, sides multiples
 * of `multiple`); the pixel range; flat latents [D] (latentChannels = D, factor null) or
 * spatial ones [C, H/f, W/f]; the latent-diffusion units. */
export class Geometry {
  constructor({ channels, height = null, width = null, multiple = 1, range = UNIT_RANGE, latentChannels, factor = null, scalingFactor = 1, shiftFactor = 0 }) {
    Object.assign(this, { channels, height, width, multiple, range, latentChannels, factor, scalingFactor, shiftFactor });
  }

  /** The geometry of a manifest already checked (checkManifest). */
  static fromManifest(manifest) {
    const { image, latent } = manifest;
    const spatial = "factor" in latent;
    return new Geometry({
      channels: image.channels,
      height: image.height ?? null,
      width: image.width ?? null,
      multiple: image.multiple ?? 1,
      range: image.range ?? UNIT_RANGE,
      latentChannels: spatial ? latent.channels : latent.dim,
      factor: spatial ? latent.factor : null,
      scalingFactor: latent.scaling_factor ?? 1,
      shiftFactor: latent.shift_factor ?? 0,
    });
  }

  get spatial() {
    return this.factor !== null;
  }

  get fixedSize() {
    return this.height !== null;
  }

  /** D of flat latents; C*h*w of spatial latents of a fixed size; null at a free size (no prior). */
  get latentDim() {
    if (!this.spatial) return this.latentChannels;
    return this.fixedSize ? this.latentChannels * (this.height / this.factor) * (this.width / this.factor) : null;
  }

  /** Refuse (OperationError "argument") an image size this model does not take. */
  checkSize(height, width) {
    if (this.fixedSize) {
      if (height !== this.height || width !== this.width) throw new OperationError("argument", `image size ${height}x${width} (HxW) is not this model's ${this.height}x${this.width}`);
      return;
    }
    const m = this.multiple;
    const ok = (side) => Number.isInteger(side) && side >= m && side <= MAX_IMAGE_SIDE && side % m === 0;
    if (!ok(height) || !ok(width)) {
      const near = (side) => Math.max(m, Math.floor(side / m + 0.5) * m);
      throw new OperationError("argument", `image size ${height}x${width} (HxW): this model takes sides that are multiples of ${m} in ${m}..${MAX_IMAGE_SIDE}; crop or pad to ${near(height)}x${near(width)}`);
    }
  }

  /** [height, width] of an operation's options: the given size, checked, or a fixed size's own. */
  sizeOf({ height = this.height, width = this.width } = {}) {
    if (height === null || width === null) throw new OperationError("argument", `this model takes images of any size (sides multiples of ${this.multiple}); give a height and width`);
    this.checkSize(height, width);
    return [height, width];
  }

  /** A latent's shape without the batch axis for an image of height x width: [D] or [C, h, w]. */
  latentShape(height, width) {
    if (!this.spatial) return [this.latentChannels];
    return [this.latentChannels, height / this.factor, width / this.factor];
  }

  /** The graphs' image and latent shapes, batch axis "N" first; a free size's sides are "H", "W", "h", "w". */
  graphShapes() {
    if (!this.fixedSize) return [["N", this.channels, "H", "W"], ["N", this.latentChannels, "h", "w"]];
    return [["N", this.channels, this.height, this.width], ["N", ...this.latentShape(this.height, this.width)]];
  }

  /** The size a reader runs each graph on once to see its real shapes: the model's own, or
   * for a free size about 4 latent pixels a side, a multiple of `multiple`. */
  probeSize() {
    if (this.fixedSize) return [this.height, this.width];
    const m = this.multiple;
    const side = Math.max(m, Math.floor(Math.max(4 * (this.factor || 1), m) / m + 0.5) * m);
    return [side, side];
  }

  toModelUnits(pixels, n, height, width) {
    return fromPixels(pixels, n, this.channels, height, width, this.range);
  }

  toPixels(mean, n, height, width) {
    return toPixels(mean, n, this.channels, height, width, this.range);
  }

  toDiffusion(z) {
    return toDiffusion(z, this.scalingFactor, this.shiftFactor);
  }

  fromDiffusion(z) {
    return fromDiffusion(z, this.scalingFactor, this.shiftFactor);
  }
}

/** The inputs and outputs each graph must have (docs/bundle-format.md, "The graphs"), for a
 * Geometry. decoderLogvar false: a vae decoder whose likelihood needs its mean only. */
export function ioContract(kind, geometry, rank = 0, decoderLogvar = true) {
  const [image, latent] = geometry.graphShapes();
  const spec = (name, shape) => ({ name, dtype: "float32", shape });
  const outs = kind === "vae" ? ["mean", "logvar"] : ["mean"];
  const decoder = (decoderLogvar ? outs : ["mean"]).map((o) => spec(o, image));
  if (rank) decoder.push(spec("factor", ["N", rank, ...image.slice(1)]));
  return {
    encoder: { inputs: [spec("x", image)], outputs: outs.map((o) => spec(o, latent)) },
    decoder: { inputs: [spec("z", latent)], outputs: decoder },
  };
}

/** Whether a manifest's decoder outputs a logvar: a vae whose likelihood is a Gaussian with
 * a learned variance (not a fixed sigma, a Bernoulli, a continuous Bernoulli or none). */
export function decoderHasLogvar(manifest) {
  const lik = manifest.likelihood || {};
  return manifest.kind !== "vae" || (["discretized_gaussian", "dequantized_gaussian"].includes(lik.type) && lik.covariance !== "fixed");
}

function contractOf(manifest) {
  const lik = manifest.likelihood || {};
  const lowrank = manifest.kind === "vae" && (lik.covariance ?? "diagonal") === "lowrank";
  return ioContract(manifest.kind, Geometry.fromManifest(manifest), lowrank ? lik.rank : 0, decoderHasLogvar(manifest));
}

const FILE_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.onnx$/;
const MAX_MODEL_BYTES = 512 * 1024 * 1024;
const FP16 = "fp16";
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const show = (v) => JSON.stringify(v) ?? String(v);

function manifestError(where, problem) {
  return new BundleError("manifest", `invalid manifest: ${where} ${problem}`);
}

/** An integer field of `object` (required unless `optional`). */
function integerField(object, key, where, optional = false) {
  if (!(key in object)) {
    if (optional) return undefined;
    throw manifestError(`${where}.${key}`, "is missing");
  }
  if (!Number.isInteger(object[key])) throw manifestError(`${where}.${key}`, `must be an integer, got ${show(object[key])}`);
  return object[key];
}

/** A graph file's entry: a plain .onnx name, its sha256 and its size. */
function checkFileEntry(entry, where) {
  if (!isObject(entry)) throw manifestError(where, "must be an object {file, sha256, bytes}");
  if (typeof entry.file !== "string" || !FILE_RE.test(entry.file)) throw manifestError(`${where}.file`, `must be a plain file name ending in .onnx, got ${show(entry.file)}`);
  if (typeof entry.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(entry.sha256)) throw manifestError(`${where}.sha256`, "must be 64 lowercase hex digits");
  const size = integerField(entry, "bytes", where);
  if (!(size > 0 && size <= MAX_MODEL_BYTES)) throw manifestError(`${where}.bytes`, `must be in 1..${MAX_MODEL_BYTES}, got ${size}`);
}

/** The `image` and `latent` objects held to the format of `version`: the geometry. */
function checkGeometry(manifest, version) {
  const { image, latent } = manifest;
  if (!isObject(image)) throw manifestError("image", "must be an object");
  if (!isObject(latent)) throw manifestError("latent", "must be an object");
  if (image.channels !== 1 && image.channels !== 3) throw manifestError("image.channels", `must be 1 or 3, got ${show(image.channels)}`);
  const fixed = "height" in image || "width" in image || version < 3;
  if (fixed) {
    const [h, w] = [integerField(image, "height", "image"), integerField(image, "width", "image")];
    if (!(h >= 1 && h <= MAX_IMAGE_SIDE && w >= 1 && w <= MAX_IMAGE_SIDE) || (version < 3 && h !== w))
      throw manifestError("image", `must be ${version < 3 ? "square with a side" : "of height and width"} in 1..${MAX_IMAGE_SIDE}, got ${h}x${w}`);
    if ("multiple" in image) throw manifestError("image.multiple", "is for a free size; a fixed size (height, width) has none");
  } else {
    const m = integerField(image, "multiple", "image");
    if (!(m >= 1 && m <= MAX_FACTOR)) throw manifestError("image.multiple", `must be in 1..${MAX_FACTOR}, got ${m}`);
  }
  if (version < 3 && "range" in image) throw manifestError("image.range", `is a format version 3 key; this manifest says version ${version}`);
  const range = image.range ?? UNIT_RANGE;
  if (!Array.isArray(range) || range.length !== 2 || !PIXEL_RANGES.some(([lo, hi]) => range[0] === lo && range[1] === hi))
    throw manifestError("image.range", `must be [0, 1] or [-1, 1], got ${show(range)}`);
  const spatial = "factor" in latent || "channels" in latent;
  if (spatial && version < 3) throw manifestError("latent", `has spatial keys (channels, factor), which need format version 3; this manifest says ${version}`);
  if (spatial) {
    if ("dim" in latent) throw manifestError("latent.dim", "is for flat latents; spatial latents have channels and factor");
    const c = integerField(latent, "channels", "latent");
    if (!(c >= 1 && c <= MAX_LATENT_CHANNELS)) throw manifestError("latent.channels", `must be in 1..${MAX_LATENT_CHANNELS}, got ${c}`);
    const f = integerField(latent, "factor", "latent");
    if (!(f >= 1 && f <= MAX_FACTOR)) throw manifestError("latent.factor", `must be in 1..${MAX_FACTOR}, got ${f}`);
    if (fixed && (image.height % f || image.width % f)) throw manifestError("latent.factor", `must divide the image's height and width (${image.height}x${image.width}), got ${f}`);
    if (!fixed && image.multiple % f) throw manifestError("image.multiple", `must be a multiple of latent.factor ${f}, got ${image.multiple}`);
    for (const key of ["scaling_factor", "shift_factor"]) {
      const v = latent[key];
      if (key in latent && !(typeof v === "number" && Number.isFinite(v) && (key === "shift_factor" || v > 0)))
        throw manifestError(`latent.${key}`, `must be a finite number${key === "scaling_factor" ? " above 0" : ""}, got ${show(v)}`);
    }
    for (const key of ["channel_mean", "channel_std"]) {
      const v = latent[key];
      if (v == null) continue;
      if (!Array.isArray(v) || v.length !== c || !v.every((x) => typeof x === "number" && Number.isFinite(x))) throw manifestError(`latent.${key}`, `must be a list of ${c} numbers`);
      if (key === "channel_std" && !v.every((x) => x > 0)) throw manifestError("latent.channel_std", "must hold numbers above 0");
    }
  } else {
    if (!fixed) throw manifestError("image", "has a free size (multiple), which needs spatial latents (latent.channels, latent.factor)");
    if (!isUnit(range)) throw manifestError("image.range", `must be [0, 1] with flat latents (their likelihoods are stated in [0, 1] pixel units), got ${show(range)}`);
    const dim = integerField(latent, "dim", "latent");
    if (!(dim >= 1 && dim <= MAX_LATENT_DIM)) throw manifestError("latent.dim", `must be in 1..${MAX_LATENT_DIM}, got ${dim}`);
    for (const key of ["scaling_factor", "shift_factor", "channel_mean", "channel_std"])
      if (key in latent) throw manifestError(`latent.${key}`, "is for spatial latents (latent.channels, latent.factor)");
  }
  return Geometry.fromManifest(manifest);
}

/** The checks beyond the JSON Schema that every reader makes (docs/bundle-format.md, "What a
 * reader checks beyond the schema"), and the schema's own rules of the image, the latent and the
 * float16 decoder's entry. The page does not bundle a schema validator: a reader that wants the
 * whole verdict runs vaesdk/manifest.schema.json too, as the conformance harness does with ajv. */
export function checkManifest(manifest) {
  checkVersion(manifest);
  const fail = manifestError;
  try {
    const version = manifest.format_version;
    const geometry = checkGeometry(manifest, version);
    const { latent } = manifest;
    // The prior dimension: D, or C*h*w of spatial latents of a fixed size; none at a free size.
    const dim = geometry.latentDim;
    const vector = (v, n, where) => {
      if (!Array.isArray(v) || v.length !== n) throw fail(where, `must be a list of ${n} numbers`);
      const bad = v.find((x) => !(typeof x === "number" && Number.isFinite(x)));
      if (bad !== undefined) throw fail(where, `must hold finite numbers, found ${show(bad)}`);
    };
    if (latent.kl_per_dim != null) {
      if (geometry.spatial) throw fail("latent.kl_per_dim", "is for flat latents; a bundle with spatial latents has none");
      vector(latent.kl_per_dim, dim, "latent.kl_per_dim");
    }
    if (manifest.kind !== "vae" && manifest.kind !== "ae") throw fail("kind", `must be 'vae' or 'ae', got ${show(manifest.kind)}`);
    const lik = manifest.likelihood;
    if (manifest.kind === "vae" && !isObject(lik)) throw fail("likelihood", "must be an object {type, ...} for a vae");
    if (manifest.kind === "ae" && lik != null) throw fail("likelihood", "must be null for a plain autoencoder ('ae')");
    const covariance = manifest.kind === "vae" ? lik.covariance ?? "diagonal" : null;
    if (covariance === "lowrank" && !(Number.isInteger(lik.rank) && lik.rank >= 1 && lik.rank <= 256)) throw fail("likelihood.rank", `must be an integer in 1..256, got ${show(lik.rank)}`);
    if (covariance === "fixed" && !(typeof lik.sigma === "number" && lik.sigma >= 1e-4 && lik.sigma <= 10)) throw fail("likelihood.sigma", `must be in 1e-4..10 ([0, 1] pixel units), got ${show(lik.sigma)}`);
    if (covariance === "lowrank" && lik.type !== "dequantized_gaussian") throw fail("likelihood.type", "must be 'dequantized_gaussian' with a low-rank covariance");
    if (covariance === "fixed" && lik.type !== "discretized_gaussian") throw fail("likelihood.covariance", "'fixed' (a sigma in the manifest) goes with type 'discretized_gaussian'");
    if (["bernoulli", "continuous_bernoulli", "none"].includes(lik?.type) && covariance !== "diagonal") throw fail("likelihood.covariance", `must be absent for type '${lik.type}', got '${covariance}'`);
    if (geometry.spatial && manifest.kind === "vae" && lik.type !== "none") throw fail("likelihood.type", `must be 'none' with spatial latents (a deterministic decoder), got ${show(lik.type)}`);
    if (geometry.spatial && manifest.anomaly != null) throw fail("anomaly", "is not defined for spatial latents; a bundle with spatial latents has none");
    const contract = contractOf(manifest);
    for (const role of ["encoder", "decoder"]) {
      checkFileEntry(manifest[role], role);
      for (const side of ["inputs", "outputs"])
        if (JSON.stringify(manifest[role][side].map(({ name, dtype, shape }) => ({ name, dtype, shape }))) !== JSON.stringify(contract[role][side]) || manifest[role][side].some((t) => Object.keys(t).length !== 3))
          throw fail(`${role}.${side}`, `must be ${JSON.stringify(contract[role][side])} for this kind, image and latent size`);
    }
    if (manifest.decoder.file === manifest.encoder.file) throw fail("decoder.file", "must differ from encoder.file");
    const variants = manifest.variants;
    if (variants != null && !isObject(variants)) throw fail("variants", "must be an object");
    const fp16 = variants?.[FP16];
    if (fp16 != null) {
      if (version < 3) throw fail(`variants.${FP16}`, `is a format version 3 key; this manifest says version ${version}`);
      if (!isObject(fp16)) throw fail(`variants.${FP16}`, "must be an object {decoder: {file, sha256, bytes}}");
      if (!("decoder" in fp16)) throw fail(`variants.${FP16}.decoder`, "is missing");
      checkFileEntry(fp16.decoder, `variants.${FP16}.decoder`);
      if (fp16.decoder.file === manifest.encoder.file || fp16.decoder.file === manifest.decoder.file)
        throw fail(`variants.${FP16}.decoder.file`, "must differ from encoder.file and decoder.file");
    }
    for (const [name, entry] of Object.entries(manifest.directions || {})) vector(entry.vector, geometry.spatial ? geometry.latentChannels : dim, `directions.${name}.vector`);
    const gaussians = latent.gaussians || {};
    if ((Object.keys(gaussians).length || Object.keys(latent.mixtures || {}).length) && !dim)
      throw fail("latent", "holds priors, which need latents of one shape: a bundle of a free image size has none");
    for (const [name, entry] of Object.entries(gaussians)) {
      vector(entry.mean, dim, `latent.gaussians.${name}.mean`);
      vector(entry.cholesky, (dim * (dim + 1)) / 2, `latent.gaussians.${name}.cholesky (lower triangle, row by row)`);
      for (let i = 0; i < dim; i++) if (!(entry.cholesky[(i * (i + 1)) / 2 + i] > 0)) throw fail(`latent.gaussians.${name}.cholesky`, "must have a positive diagonal");
    }
    const names = new Set([...(manifest.kind === "vae" && !geometry.spatial ? [STANDARD] : []), ...Object.keys(gaussians)]);
    for (const [name, entry] of Object.entries(latent.mixtures || {})) {
      if (name === STANDARD || names.has(name)) throw fail("latent.mixtures", `has a bad or repeated prior name '${name}'`);
      if (entry.file === manifest.encoder.file || entry.file === manifest.decoder.file) throw fail(`latent.mixtures.${name}.file`, "must differ from the graphs' files");
      names.add(name);
    }
    if (latent.default_prior != null && !names.has(latent.default_prior)) throw fail("latent.default_prior", `names no prior of this bundle ('${latent.default_prior}'; known: ${[...names].sort().join(", ")})`);
    const prior = manifest.anomaly?.calibration?.prior;
    if (prior != null && prior !== STANDARD && !(prior in (latent.mixtures || {}))) throw fail("anomaly.calibration.prior", `must be 'standard' or a mixture of this bundle, got '${prior}'`);
    const density = manifest.anomaly?.calibration?.density;
    if (density != null) {
      const d = density.features.length;
      for (const key of ["center", "scale"]) if (density[key].length !== d) throw fail(`anomaly.calibration.density.${key}`, `must hold ${d} numbers, one per feature`);
      if (density.points.length > manifest.anomaly.calibration.n) throw fail("anomaly.calibration.density.points", "must be no more than the calibration's n");
      for (const row of density.points) if (row.length !== d) throw fail("anomaly.calibration.density.points", `must hold lists of ${d} finite numbers, one per feature`);
    }
  } catch (e) {
    if (e instanceof BundleError) throw e;
    throw new BundleError("manifest", `invalid manifest: ${e.message} (check it against vaesdk/manifest.schema.json)`);
  }
  return manifest;
}

// ---- the prior file: a zip of .npy arrays (docs/bundle-format.md, "The prior file") -----------

const ZIP_END = 0x06054b50;
const ZIP_CENTRAL = 0x02014b50;
const ZIP_LOCAL = 0x04034b50;
const NPY_ENTRIES = ["cholesky.npy", "means.npy", "weights.npy"];
const DIAGONAL_ENTRIES = ["means.npy", "scales.npy", "weights.npy"];
const MAX_COMPONENTS = 4096;

function readNpy(bytes, label) {
  const fail = (problem) => new BundleError("prior-file", `${label} ${problem}; re-export the bundle (numpy.savez writes this layout)`);
  if (bytes.length < 10 || bytes[0] !== 0x93 || String.fromCharCode(...bytes.subarray(1, 6)) !== "NUMPY") throw fail("is not a .npy array");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = bytes[6];
  if ((major !== 1 && major !== 2) || bytes[7] !== 0) throw fail(`is a .npy of format ${major}.${bytes[7]}; prior files use format 1.0 or 2.0`);
  const start = major === 1 ? 10 : 12;
  const length = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const header = new TextDecoder().decode(bytes.subarray(start, start + length));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  if (descr !== "<f8" || fortran) throw fail(`holds ${descr} in ${fortran ? "Fortran" : "C"} order; prior files hold little-endian float64 ('<f8') in C order`);
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] || "").split(",").filter((x) => x.trim()).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const body = start + length;
  if (bytes.length - body !== 8 * count) throw fail(`has ${bytes.length - body} data bytes for shape [${shape}]; expected ${8 * count}`);
  const data = new Float64Array(count);
  for (let i = 0; i < count; i++) data[i] = view.getFloat64(body + 8 * i, true);
  return { shape, data };
}

/** A zip64 extra field's sizes and offset, where the 32-bit fields say 0xFFFFFFFF. */
function zip64(view, at, length, fields) {
  for (let p = at; p + 4 <= at + length; ) {
    const [id, size] = [view.getUint16(p, true), view.getUint16(p + 2, true)];
    if (id === 0x0001) {
      let q = p + 4;
      return fields.map((v) => {
        if (v !== 0xffffffff) return v;
        const big = Number(view.getBigUint64(q, true));
        q += 8;
        return big;
      });
    }
    p += 4 + size;
  }
  return fields;
}

/** The arrays of a prior file: exactly weights.npy, means.npy and cholesky.npy (or
 * scales.npy for a diagonal mixture), stored. */
export function readNpz(buffer, label = "npz") {
  const fail = (problem) => new BundleError("prior-file", `${label} ${problem}; re-export the bundle (numpy.savez writes this layout)`);
  const view = new DataView(buffer);
  let end = buffer.byteLength - 22;
  while (end >= 0 && view.getUint32(end, true) !== ZIP_END) end--;
  if (end < 0) throw fail("is not a valid .npz prior file (no zip end record)");
  const arrays = {};
  const names = [];
  let at = view.getUint32(end + 16, true);
  for (let i = view.getUint16(end + 10, true); i > 0; i--) {
    if (at + 46 > buffer.byteLength || view.getUint32(at, true) !== ZIP_CENTRAL) throw fail("is not a valid .npz prior file (broken zip directory)");
    const [flags, method] = [view.getUint16(at + 8, true), view.getUint16(at + 10, true)];
    const [nameLength, extraLength, commentLength] = [28, 30, 32].map((o) => view.getUint16(at + o, true));
    const name = new TextDecoder().decode(new Uint8Array(buffer, at + 46, nameLength));
    const [, compressed, local] = zip64(view, at + 46 + nameLength, extraLength, [view.getUint32(at + 24, true), view.getUint32(at + 20, true), view.getUint32(at + 42, true)]);
    names.push(name);
    if (method !== 0) throw fail(`holds ${name} compressed (zip method ${method}); prior files store entries uncompressed`);
    if (flags & 1) throw fail(`holds ${name} encrypted`);
    if (view.getUint32(local, true) !== ZIP_LOCAL) throw fail("is not a valid .npz prior file (broken local header)");
    const data = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    if (name.endsWith(".npy")) arrays[name.slice(0, -4)] = new Uint8Array(buffer, data, compressed);
    at += 46 + nameLength + extraLength + commentLength;
  }
  const sorted = JSON.stringify([...names].sort());
  if (sorted !== JSON.stringify(NPY_ENTRIES) && sorted !== JSON.stringify(DIAGONAL_ENTRIES))
    throw fail(`holds the entries ${JSON.stringify(names)}; a prior file holds exactly ${JSON.stringify(NPY_ENTRIES)} (scales.npy in place of cholesky.npy for a diagonal mixture)`);
  for (const k of Object.keys(arrays)) arrays[k] = readNpy(arrays[k], `${label}: ${k}.npy`);
  return arrays;
}

/** A prior file's arrays checked as a mixture of dimension `dim`, weights normalised. */
export function checkMixture(arrays, dim, label) {
  const fail = (problem) => new BundleError("prior-file", `${label} ${problem}; re-export the bundle`);
  const { weights, means, cholesky, scales } = arrays;
  const k = weights.shape.length === 1 ? weights.shape[0] : -1;
  if (scales) {
    if (!(k >= 1 && k <= MAX_COMPONENTS) || means.shape.join() !== `${k},${dim}` || scales.shape.join() !== `${k},${dim}`)
      throw fail(`has shapes weights [${weights.shape}], means [${means.shape}], scales [${scales.shape}]; expected [K], [K, ${dim}], [K, ${dim}] with 1 <= K <= ${MAX_COMPONENTS}`);
  } else if (!(k >= 1 && k <= MAX_COMPONENTS) || means.shape.join() !== `${k},${dim}` || cholesky.shape.join() !== `${k},${dim},${dim}`)
    throw fail(`has shapes weights [${weights.shape}], means [${means.shape}], cholesky [${cholesky.shape}]; expected [K], [K, ${dim}], [K, ${dim}, ${dim}] with 1 <= K <= ${MAX_COMPONENTS}`);
  for (const [name, a] of Object.entries(arrays)) if (!a.data.every(Number.isFinite)) throw fail(`: ${name} must hold finite floating-point numbers`);
  const sum = weights.data.reduce((a, b) => a + b, 0);
  if (weights.data.some((w) => w < 0) || Math.abs(sum - 1) > 1e-6) throw fail(`: weights must be non-negative and sum to 1 (sum ${sum})`);
  const normalised = { shape: weights.shape, data: weights.data.map((w) => w / sum) };
  if (scales) {
    if (scales.data.some((v) => !(v > 0))) throw fail(": scales must be positive standard deviations");
    return { weights: normalised, means, scales };
  }
  for (let c = 0; c < k; c++)
    for (let i = 0; i < dim; i++)
      for (let j = i; j < dim; j++) {
        const v = cholesky.data[(c * dim + i) * dim + j];
        if (i === j ? !(v > 0) : v !== 0) throw fail(": cholesky must be lower-triangular with a positive diagonal");
      }
  return { weights: normalised, means, cholesky };
}

async function checkDigest(buffer, entry, label) {
  if (buffer.byteLength !== entry.bytes) throw new BundleError("integrity", `${label} holds ${buffer.byteLength} bytes, the manifest says ${entry.bytes}: the file was modified or replaced`);
  if (!globalThis.crypto?.subtle) return; // only secure contexts (https, localhost) have it
  const hex = [...new Uint8Array(await crypto.subtle.digest("SHA-256", buffer))].map((b) => b.toString(16).padStart(2, "0")).join("");
  if (hex !== entry.sha256) throw new BundleError("integrity", `${label} does not match its sha256 in the manifest: the file was modified or replaced`);
}

// ---- the model -------------------------------------------------------------------------------

const CHECK_PROBLEM = "(is the encoder in the decoder's place, or the model from another bundle?)";

/** A bundle with flat latents [D]: priors to sample, a decoder with a likelihood (or none). */
export class BundleModel {
  constructor(manifest, decoder, loadEncoder, mixtures = {}) {
    this.manifest = manifest;
    this.name = manifest.name;
    this.kind = manifest.kind;
    this.geometry = Geometry.fromManifest(manifest);
    this.latentDim = manifest.latent.dim;
    this.height = manifest.image.height;
    this.width = manifest.image.width;
    this.channels = manifest.image.channels;
    const lik = manifest.likelihood || {};
    this.rank = lik.covariance === "lowrank" ? lik.rank : 0;
    this.likelihood = manifest.kind === "vae" ? (lik.covariance === "fixed" ? "fixed_gaussian" : lik.type) : null;
    this.sigma = lik.covariance === "fixed" ? lik.sigma : null;
    this.priors = priorsOf(manifest, mixtures);
    this._decoder = decoder;
    this._encoder = null;
    this._loadEncoder = loadEncoder; // the encoder is fetched later, on the first encode
  }

  /** Latent dimensions, most used first (by the export's average KL per dimension). */
  dimsByUsage() {
    const kl = this.manifest.latent.kl_per_dim;
    const dims = [...Array(this.latentDim).keys()];
    return kl ? dims.sort((a, b) => kl[b] - kl[a] || a - b) : dims;
  }

  /** The prior `sample` uses by default (the format's rule: the manifest's choice, else N(0, I)
   * for a vae, else the first name). */
  get defaultPrior() {
    return priorNames(this.manifest).defaultPrior;
  }

  /** n latents from a prior: Float32Array [n * D]. `noise` (see `noiseFrom`) gives the draws
   * the SDK's latents for the same normals and uniforms; without it a seeded source is used,
   * repeatable in the browser but not numpy's streams. */
  sample(n, { seed = Date.now(), noise = null, prior = this.defaultPrior, temperature = 1, truncation = null } = {}) {
    const draw = this.priors.get(prior);
    if (!draw) throw new Error(`unknown prior ${prior}; this model has: ${[...this.priors.keys()].join(", ")}`);
    if (!(temperature >= 0 && temperature <= 1000)) throw new Error(`temperature must be in 0..1000 (1 = the prior's own spread), got ${temperature}`);
    if (truncation !== null && !(truncation > 0 && Number.isFinite(truncation))) throw new Error(`truncation must be a number > 0 (prior standard deviations), got ${truncation}`);
    return draw(n, noise || seededNoise(seed), temperature, truncation);
  }

  _latents(latents) {
    const z = latents instanceof Float32Array ? latents : Float32Array.from(latents.flat());
    const d = this.latentDim;
    if (z.length === 0 || z.length % d !== 0) throw new Error(`latents must hold N x ${d} numbers, got ${z.length}`);
    return { z, n: z.length / d };
  }

  _image(pixels, n) {
    return { pixels, n, height: this.height, width: this.width, channels: this.channels };
  }

  /** The decoder's mean for latents (Float32Array [N * D] or arrays of D numbers): Float32Array NCHW. */
  async decodeMean(latents) {
    const { z, n } = this._latents(latents);
    const out = await this._decoder.run({ z: new ort.Tensor("float32", z, [n, this.latentDim]) }, ["mean"]);
    return out.mean.data;
  }

  /** Latents -> {pixels: Uint8Array NHWC, n, height, width, channels}: the decoder's mean as pixels. */
  async decode(latents) {
    const { n } = this._latents(latents);
    return this._image(toPixels(await this.decodeMean(latents), n, this.channels, this.height, this.width), n);
  }

  /** A draw from p(x|z) for each latent, given its noise: eps holds, per image, R normals for
   * the low-rank factor then C*H*W for the diagonal (R = 0 for a diagonal decoder). Returns
   * {x: Float32Array NCHW before rounding, pixels: Uint8Array NHWC, ...}. */
  async decodeSample(latents, eps) {
    if (this.kind !== "vae") throw new Error("sampling pixels needs a VAE; this bundle is a plain autoencoder");
    if (!["discretized_gaussian", "dequantized_gaussian", "fixed_gaussian"].includes(this.likelihood))
      throw new Error(`pixel draws of a '${this.likelihood}' decoder are not in vae.js; decode the means`);
    const { z, n } = this._latents(latents);
    const pixels = this.channels * this.height * this.width;
    const r = this.rank;
    if (eps.length !== n * (r + pixels)) throw new Error(`eps must hold ${n} x ${r + pixels} normals, got ${eps.length}`);
    const fixed = this.sigma !== null;
    const names = fixed ? ["mean"] : r ? ["mean", "logvar", "factor"] : ["mean", "logvar"];
    const out = await this._decoder.run({ z: new ort.Tensor("float32", z, [n, this.latentDim]) }, names);
    const x = Float32Array.from(out.mean.data);
    const logvar = fixed ? null : out.logvar.data;
    const fixedSd = fixed ? Math.fround(this.sigma) : 0;
    for (let k = 0; k < n; k++) {
      const row = k * (r + pixels);
      for (let p = 0; p < pixels; p++) {
        const i = k * pixels + p;
        const sd = fixed ? fixedSd : Math.fround(Math.exp(Math.fround(0.5 * logvar[i])));
        x[i] = x[i] + Math.fround(sd * Math.fround(eps[row + r + p]));
      }
      if (r) {
        const factor = out.factor.data; // [N, R, C, H, W]: W's column j is factor[k, j] flattened
        for (let p = 0; p < pixels; p++) {
          let v = 0;
          for (let j = 0; j < r; j++) v += Math.fround(eps[row + j]) * factor[(k * r + j) * pixels + p];
          x[k * pixels + p] = x[k * pixels + p] + Math.fround(v);
        }
      }
    }
    return { x, ...this._image(toPixels(x, n, this.channels, this.height, this.width), n) };
  }

  /** Model-sized pixels (Uint8Array NHWC, N images) -> the posterior: {mean, logvar} as
   * Float32Array [N * D] (logvar null for a plain autoencoder). */
  async encodePosterior(pixels) {
    if (!this._encoder) this._encoder = await this._loadEncoder();
    const { height: h, width: w, channels: c } = this;
    const n = pixels.length / (h * w * c);
    const names = this.kind === "vae" ? ["mean", "logvar"] : ["mean"];
    const out = await this._encoder.run({ x: new ort.Tensor("float32", fromPixels(pixels, n, c, h, w), [n, c, h, w]) }, names);
    return { mean: Float32Array.from(out.mean.data), logvar: out.logvar ? Float32Array.from(out.logvar.data) : null };
  }

  /** Model-sized pixels (Uint8Array NHWC, N images) -> posterior means, Float32Array [N * D]. */
  async encode(pixels) {
    return (await this.encodePosterior(pixels)).mean;
  }
}

/** A bundle with spatial latents [C, H/f, W/f] (format version 3): the autoencoders of latent
 * diffusion. The same interface as BundleModel, with the image size given to each operation
 * (`{height, width}`, sides multiples of `multiple`; a fixed-size model's own by default) and
 * latents Float32Array [N * C * h * w] in C, h, w order. Its decoder is deterministic and it has
 * no prior: `sample` and `decodeSample` refuse (OperationError "unsupported"). A float16
 * decoder (`variants.fp16`) is not read: the wasm backend computes in float32. */
export class SpatialBundleModel {
  constructor(manifest, decoder, loadEncoder) {
    this.manifest = manifest;
    this.name = manifest.name;
    this.kind = manifest.kind;
    this.geometry = Geometry.fromManifest(manifest);
    const g = this.geometry;
    this.height = g.height; // null at a free size
    this.width = g.width;
    this.channels = g.channels;
    this.multiple = g.multiple;
    this.factor = g.factor;
    this.latentChannels = g.latentChannels;
    this.latentDim = g.latentDim; // null at a free size
    this.rank = 0;
    this.likelihood = manifest.kind === "vae" ? "none" : null;
    this.priors = new Map(); // N(0, I) is not the prior of spatial latents: its draws decode to noise
    this._decoder = decoder;
    this._encoder = null;
    this._loadEncoder = loadEncoder;
  }

  get defaultPrior() {
    return null;
  }

  dimsByUsage() {
    return [];
  }

  sample() {
    throw new OperationError("unsupported", `'${this.name}' has spatial latents and no prior: N(0, I) is not its prior (its draws decode to noise); encode an image and decode its latent, or decode latents from a latent-diffusion model`);
  }

  async decodeSample() {
    throw new OperationError("unsupported", `'${this.name}' has a deterministic decoder: there are no pixels to draw; decode the latents instead`);
  }

  /** The tile side (image pixels) an operation runs in, or null: untiled. `tileSize` is a
   * multiple of max(multiple, factor), at least 4 of them; an image no larger than it runs whole. */
  _tiling(height, width, tileSize) {
    if (tileSize == null) return null;
    const step = Math.max(this.multiple, this.factor);
    if (!Number.isInteger(tileSize) || tileSize % step || tileSize < 4 * step) throw new OperationError("argument", `tile_size ${tileSize} must be a multiple of ${step} and at least ${4 * step}`);
    return height > tileSize || width > tileSize ? tileSize : null;
  }

  _latents(latents, options) {
    const [height, width] = this.geometry.sizeOf(options);
    const z = latents instanceof Float32Array ? latents : Float32Array.from(latents.flat(3));
    const [c, h, w] = this.geometry.latentShape(height, width);
    const per = c * h * w;
    if (z.length === 0 || z.length % per !== 0) throw new OperationError("argument", `latents must hold N x ${c} x ${h} x ${w} numbers for images of ${height}x${width}, got ${z.length}`);
    if (!z.every(Number.isFinite)) throw new OperationError("argument", "latents hold NaN or infinite values");
    return { z, n: z.length / per, height, width, c, h, w };
  }

  /** One graph run, its outputs' sizes checked against the manifest's promise. */
  async _run(session, role, input, dims, names, want) {
    const out = await session.run({ [role === "decoder" ? "z" : "x"]: new ort.Tensor("float32", input, dims) }, names);
    for (const name of names) {
      if (JSON.stringify(out[name].dims) !== JSON.stringify(want))
        throw new BundleError("graph", `the ${role} of '${this.name}' returns '${name}' as [${out[name].dims}] for an input [${dims}]; its manifest promises [${want}]: the model file does not match its manifest`);
    }
    return names.map((name) => out[name].data);
  }

  /** The decoder's mean for latents at an image size ({height, width}; `tileSize`: run in
   * tiles of that many image pixels a side, overlapping by a quarter, blended): Float32Array
   * NCHW in the model's pixel range. */
  async decodeMean(latents, options = {}) {
    const { z, n, height, width, c, h, w } = this._latents(latents, options);
    const side = this._tiling(height, width, options.tileSize);
    const image = [1, this.channels, height, width];
    if (side === null) return (await this._run(this._decoder, "decoder", z, [n, c, h, w], ["mean"], [n, ...image.slice(1)]))[0];
    const f = this.factor;
    const tile = side / f;
    const mean = new Float32Array(n * this.channels * height * width);
    for (let k = 0; k < n; k++) {
      const run = (part, t) => this._run(this._decoder, "decoder", part, [1, c, t.h, t.w], ["mean"], [1, this.channels, t.h * f, t.w * f]);
      const [blended] = await runTiled(z.subarray(k * c * h * w, (k + 1) * c * h * w), [c, h, w], run, tile, Math.floor(tile / 4), f, 1);
      mean.set(blended, k * blended.length);
    }
    return mean;
  }

  /** Latents -> {pixels: Uint8Array NHWC, n, height, width, channels}: the decoder's mean as pixels. */
  async decode(latents, options = {}) {
    const { n, height, width } = this._latents(latents, options);
    const pixels = this.geometry.toPixels(await this.decodeMean(latents, options), n, height, width);
    return { pixels, n, height, width, channels: this.channels };
  }

  /** Pixels (Uint8Array NHWC, N images of {height, width}; `tileSize` as for decodeMean, the
   * overlap a quarter of it rounded down to a multiple of the factor) -> the posterior: {mean,
   * logvar} as Float32Array [N * C * h * w] (logvar null for a plain autoencoder), and n, h, w. */
  async encodePosterior(pixels, options = {}) {
    const [height, width] = this.geometry.sizeOf(options);
    const per = height * width * this.channels;
    if (pixels.length === 0 || pixels.length % per !== 0) throw new OperationError("argument", `pixels must hold N x ${height} x ${width} x ${this.channels} values (NHWC), got ${pixels.length}`);
    if (!this._encoder) this._encoder = await this._loadEncoder();
    const n = pixels.length / per;
    const [c, h, w] = this.geometry.latentShape(height, width);
    const names = this.kind === "vae" ? ["mean", "logvar"] : ["mean"];
    const x = this.geometry.toModelUnits(pixels, n, height, width);
    const side = this._tiling(height, width, options.tileSize);
    let outs;
    if (side === null) outs = await this._run(this._encoder, "encoder", x, [n, this.channels, height, width], names, [n, c, h, w]);
    else {
      const f = this.factor;
      outs = names.map(() => new Float32Array(n * c * h * w));
      for (let k = 0; k < n; k++) {
        const run = (part, t) => this._run(this._encoder, "encoder", part, [1, this.channels, t.h, t.w], names, [1, c, t.h / f, t.w / f]);
        const image = x.subarray(k * this.channels * height * width, (k + 1) * this.channels * height * width);
        const blended = await runTiled(image, [this.channels, height, width], run, side, Math.floor(side / 4 / f) * f, 1, f);
        blended.forEach((b, i) => outs[i].set(b, k * c * h * w));
      }
    }
    return { mean: Float32Array.from(outs[0]), logvar: outs[1] ? Float32Array.from(outs[1]) : null, n, h, w };
  }

  /** Pixels -> posterior means, Float32Array [N * C * h * w]. */
  async encode(pixels, options = {}) {
    return (await this.encodePosterior(pixels, options)).mean;
  }

  /** Encode, then decode the posterior means at the same size: {pixels, n, height, width, channels}. */
  async reconstruct(pixels, options = {}) {
    return this.decode(await this.encode(pixels, options), options);
  }

  /** This model's latents -> a latent-diffusion model's: (z - shift_factor) * scaling_factor. */
  toDiffusion(z) {
    return this.geometry.toDiffusion(z);
  }

  /** A latent-diffusion model's latents -> this model's: z / scaling_factor + shift_factor. */
  fromDiffusion(z) {
    return this.geometry.fromDiffusion(z);
  }
}

/** The graph's inputs and outputs: the contract's names in order, float32, its ranks and
 * sizes, a symbolic batch axis (any name), and a free size's sides symbolic (any names). */
function checkGraph(session, contract, label) {
  const want = (side) => contract[side].map((t) => t.name);
  for (const [side, got, meta] of [["inputs", session.inputNames, session.inputMetadata], ["outputs", session.outputNames, session.outputMetadata]]) {
    if (JSON.stringify(got) !== JSON.stringify(want(side)))
      throw new BundleError("graph", `${label} has ${side} ${JSON.stringify(got)} but the bundle contract needs ${JSON.stringify(want(side))} ${CHECK_PROBLEM}`);
    (meta || []).forEach((m, i) => {
      const need = contract[side][i].shape;
      const shape = m.shape || [];
      const sizes = shape.length === need.length && shape.slice(1).every((d, j) => (typeof need[j + 1] === "number" ? d === need[j + 1] : typeof d !== "number"));
      if (m.type !== "float32" || !sizes || typeof shape[0] === "number")
        throw new BundleError("graph", `${label} ${side.slice(0, -1)} '${m.name}' is ${m.type} ${JSON.stringify(shape)}; the contract needs float32 ${JSON.stringify(need)} with a symbolic batch axis`);
    });
  }
}

async function createSession(bytes) {
  return ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
}

/** Read a bundle through `read(name) -> ArrayBuffer` (which throws a BundleError of category
 * "missing-file" for a file that is not there): manifest, checks, the decoder and the priors;
 * the encoder is read on the first encode. Every refusal is a BundleError. */
export async function openBundle(read, { validate = null } = {}) {
  const manifest = parseManifest(await read("manifest.json"));
  checkVersion(manifest);
  if (validate) validate(manifest); // a JSON Schema validator of vaesdk/manifest.schema.json, where the reader has one
  checkManifest(manifest);
  const contract = contractOf(manifest);
  const graph = async (role) => {
    const entry = manifest[role];
    const bytes = await read(entry.file);
    await checkDigest(bytes, entry, entry.file);
    const session = await createSession(bytes);
    checkGraph(session, contract[role], entry.file);
    return session;
  };
  const decoder = await graph("decoder");
  const geometry = Geometry.fromManifest(manifest);
  const mixtures = {};
  for (const [name, entry] of Object.entries(manifest.latent.mixtures || {})) {
    const buffer = await read(entry.file);
    await checkDigest(buffer, entry, entry.file);
    mixtures[name] = checkMixture(readNpz(buffer, entry.file), geometry.latentDim, entry.file);
  }
  // Spatial latents: the prior files are checked as every reader must, and not drawn from.
  if (geometry.spatial) return new SpatialBundleModel(manifest, decoder, () => graph("encoder"));
  return new BundleModel(manifest, decoder, () => graph("encoder"), mixtures);
}

/** Load a bundle from a base URL that holds manifest.json and the model files. */
export async function loadBundle(base, { headers = {} } = {}) {
  if (typeof ort === "undefined") throw new Error("onnxruntime-web is not loaded (run `npm ci` in web/)");
  // One thread: worker threads need cross-origin isolation, which a plain static host lacks.
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL("vendor/", document.baseURI).href;
  const root = base.endsWith("/") ? base : `${base}/`;
  const read = async (name) => {
    const response = await fetch(`${root}${name}`, { headers });
    if (response.status === 404) throw new BundleError("missing-file", `${root}${name} is missing`);
    if (!response.ok) throw new Error(`cannot load ${root}${name}: HTTP ${response.status}`);
    return response.arrayBuffer();
  };
  return openBundle(read);
}

/** RGBA canvas data -> Uint8Array HWC of c channels (luma, as Pillow's L, for one). */
function canvasPixels(rgba, count, c) {
  const out = new Uint8Array(count * c);
  for (let p = 0; p < count; p++) {
    const [r, g, b] = [rgba[4 * p], rgba[4 * p + 1], rgba[4 * p + 2]];
    if (c === 1) out[p] = Math.round((r * 299 + g * 587 + b * 114) / 1000);
    else out.set([r, g, b], 3 * p);
  }
  return out;
}

/** Image file -> model-sized pixels (Uint8Array HWC), by the SDK's policy: transparency on
 * black, scaled to fit the model's height x width with its aspect kept, centred on black, luma
 * for one channel. The browser's resampling differs slightly from Pillow's Lanczos. */
export async function imageToPixels(file, model) {
  const bitmap = await createImageBitmap(file);
  const { height, width, channels: c } = model;
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "black";
  ctx.fillRect(0, 0, width, height);
  const scale = Math.min(width / bitmap.width, height / bitmap.height);
  const w = Math.max(1, Math.round(bitmap.width * scale));
  const h = Math.max(1, Math.round(bitmap.height * scale));
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, Math.floor((width - w) / 2), Math.floor((height - h) / 2), w, h);
  return canvasPixels(ctx.getImageData(0, 0, width, height).data, width * height, c);
}

/** Image file -> pixels at the image's own size for a free-size model: {pixels (Uint8Array
 * HWC), height, width}. An image whose longer side exceeds `maxSide` is first scaled down to it
 * (the page's bound on memory, not the format's); then its sides are cropped, centred, to
 * multiples of the model's `multiple`. Transparency on black, luma for one channel. */
export async function imageAtOwnSize(file, model, { maxSide = 512 } = {}) {
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const m = model.multiple;
  const scale = Math.min(1, maxSide / Math.max(bitmap.width, bitmap.height));
  const [sw, sh] = [Math.max(1, Math.round(bitmap.width * scale)), Math.max(1, Math.round(bitmap.height * scale))];
  const [width, height] = [Math.max(m, sw - (sw % m)), Math.max(m, sh - (sh % m))];
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "black";
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, Math.floor((width - sw) / 2), Math.floor((height - sh) / 2), sw, sh);
  return { pixels: canvasPixels(ctx.getImageData(0, 0, width, height).data, width * height, model.channels), height, width };
}
