// A vaesdk bundle in the browser: reads manifest.json, runs decoder.onnx (and encoder.onnx)
// with onnxruntime-web's wasm backend, and samples from the bundle's priors (N(0, I), the
// fitted mixtures and Gaussians; the default is the manifest's `latent.default_prior`). Everything runs
// client-side; the bundle format is described in docs/bundle-format.md.
//
//   const model = await loadBundle("models/fashion-mnist/");
//   const z = model.sample(4, { seed: 0 });           // Float32Array [4 * D]
//   const { pixels } = await model.decode(z);         // Uint8Array [4 * H * W * C], NHWC
//
// Every rule here is the format's (docs/bundle-format.md), held to the conformance vectors of
// conformance/v2/ under Node (conformance/run-vae-js.mjs): the draws take their noise as input
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

/** The prior names of a manifest and its default, by the format's rule. */
export function priorNames(manifest) {
  const names = [
    ...(manifest.kind === "vae" ? [STANDARD] : []),
    ...Object.keys(manifest.latent.mixtures || {}).sort(),
    ...Object.keys(manifest.latent.gaussians || {}).sort(),
  ];
  const named = manifest.latent.default_prior;
  return { names, defaultPrior: named ?? (manifest.kind === "vae" ? STANDARD : names[0] ?? null) };
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

/** Decoder means [n, c, h, w] in [0, 1] units -> uint8 [n, h, w, c]: clip to [0, 1], multiply
 * by 255 in float32, round half to even. Any NaN or infinity refuses the whole batch. */
export function toPixels(mean, n, c, h, w) {
  const pixels = new Uint8Array(n * h * w * c);
  for (let i = 0; i < mean.length; i++) {
    if (!Number.isFinite(mean[i])) throw new BundleError("non-finite", "the decoder produced NaN or infinite pixels; the model file is broken");
  }
  for (let k = 0; k < n; k++)
    for (let ch = 0; ch < c; ch++)
      for (let p = 0; p < h * w; p++) {
        const v = Math.fround(Math.min(1, Math.max(0, mean[(k * c + ch) * h * w + p])));
        pixels[(k * h * w + p) * c + ch] = roundHalfEven(Math.fround(v * F255));
      }
  return pixels;
}

/** uint8 [n, h, w, c] -> the encoder's input [n, c, h, w]: pixel times float32(1/255), in float32. */
export function fromPixels(pixels, n, c, h, w) {
  const x = new Float32Array(pixels.length);
  for (let k = 0; k < n; k++)
    for (let ch = 0; ch < c; ch++)
      for (let p = 0; p < h * w; p++) x[(k * c + ch) * h * w + p] = Math.fround(pixels[(k * h * w + p) * c + ch] * INV_255);
  return x;
}

// ---- manifest.json (docs/bundle-format.md, "Reading manifest.json") -----------------------------

const TOKEN = /\s*(?:("(?:[^"\\]|\\.)*")|(-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?)|([{}[\]:,])|(true|false|null))/y;
const INTEGER_FIELDS =
  /^(?:format_version|image\.(?:height|width|channels)|latent\.dim|likelihood\.rank|(?:encoder|decoder)\.bytes|latent\.mixtures\..+\.bytes|(?:encoder|decoder)\.(?:inputs|outputs)\.\d+\.shape\.\d+|anomaly\.calibration\.n)$/;

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

export const FORMAT_VERSION = 2;

/** The format and version checks, made before anything else is read. */
export function checkVersion(manifest) {
  if (manifest === null || typeof manifest !== "object" || Array.isArray(manifest)) throw new BundleError("manifest", "invalid manifest: the top level must be a JSON object");
  if (manifest.format !== "vaesdk-bundle") throw new BundleError("manifest", `invalid manifest: format must be 'vaesdk-bundle', got ${JSON.stringify(manifest.format)} (is this a vaesdk bundle?)`);
  const v = manifest.format_version;
  if (Number.isInteger(v) && v > FORMAT_VERSION) throw new BundleError("version", `bundle format_version ${v} is newer than this page reads (${FORMAT_VERSION})`);
  if (!Number.isInteger(v) || v < 1) throw new BundleError("manifest", `invalid manifest: format_version must be an integer 1..${FORMAT_VERSION}, got ${JSON.stringify(v)}`);
}

/** The inputs and outputs each graph must have (docs/bundle-format.md, "The graphs").
 * decoderLogvar false: a vae decoder whose likelihood needs its mean only. */
export function ioContract(kind, channels, size, dim, rank = 0, decoderLogvar = true) {
  const image = ["N", channels, size, size];
  const spec = (name, shape) => ({ name, dtype: "float32", shape });
  const outs = kind === "vae" ? ["mean", "logvar"] : ["mean"];
  const decoder = (decoderLogvar ? outs : ["mean"]).map((o) => spec(o, image));
  if (rank) decoder.push(spec("factor", ["N", rank, channels, size, size]));
  return {
    encoder: { inputs: [spec("x", image)], outputs: outs.map((o) => spec(o, ["N", dim])) },
    decoder: { inputs: [spec("z", ["N", dim])], outputs: decoder },
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
  return ioContract(manifest.kind, manifest.image.channels, manifest.image.height, manifest.latent.dim, lowrank ? lik.rank : 0, decoderHasLogvar(manifest));
}

/** The checks beyond the JSON Schema that every reader makes (docs/bundle-format.md, "What a
 * reader checks beyond the schema"). The page does not bundle a schema validator: a reader
 * that wants the whole verdict runs vaesdk/manifest.schema.json too, as the conformance
 * harness does with ajv. */
export function checkManifest(manifest) {
  checkVersion(manifest);
  const fail = (where, problem) => new BundleError("manifest", `invalid manifest: ${where} ${problem}`);
  try {
    const { image, latent } = manifest;
    const dim = latent.dim;
    if (image.width !== image.height) throw fail("image", `must be square, got ${image.height}x${image.width}`);
    const vector = (v, n, where) => {
      if (!Array.isArray(v) || v.length !== n) throw fail(where, `must be a list of ${n} numbers`);
    };
    if (latent.kl_per_dim != null) vector(latent.kl_per_dim, dim, "latent.kl_per_dim");
    const lik = manifest.likelihood;
    const covariance = manifest.kind === "vae" ? lik.covariance ?? "diagonal" : null;
    if (covariance === "lowrank" && lik.type !== "dequantized_gaussian") throw fail("likelihood.type", "must be 'dequantized_gaussian' with a low-rank covariance");
    if (covariance === "fixed" && lik.type !== "discretized_gaussian") throw fail("likelihood.covariance", "'fixed' (a sigma in the manifest) goes with type 'discretized_gaussian'");
    if (["bernoulli", "continuous_bernoulli", "none"].includes(lik?.type) && covariance !== "diagonal") throw fail("likelihood.covariance", `must be absent for type '${lik.type}', got '${covariance}'`);
    const contract = contractOf(manifest);
    for (const role of ["encoder", "decoder"])
      for (const side of ["inputs", "outputs"])
        if (JSON.stringify(manifest[role][side].map(({ name, dtype, shape }) => ({ name, dtype, shape }))) !== JSON.stringify(contract[role][side]) || manifest[role][side].some((t) => Object.keys(t).length !== 3))
          throw fail(`${role}.${side}`, `must be ${JSON.stringify(contract[role][side])} for this kind, image and latent size`);
    if (manifest.decoder.file === manifest.encoder.file) throw fail("decoder.file", "must differ from encoder.file");
    for (const [name, entry] of Object.entries(manifest.directions || {})) vector(entry.vector, dim, `directions.${name}.vector`);
    const gaussians = latent.gaussians || {};
    for (const [name, entry] of Object.entries(gaussians)) {
      vector(entry.mean, dim, `latent.gaussians.${name}.mean`);
      vector(entry.cholesky, (dim * (dim + 1)) / 2, `latent.gaussians.${name}.cholesky (lower triangle, row by row)`);
      for (let i = 0; i < dim; i++) if (!(entry.cholesky[(i * (i + 1)) / 2 + i] > 0)) throw fail(`latent.gaussians.${name}.cholesky`, "must have a positive diagonal");
    }
    const names = new Set([...(manifest.kind === "vae" ? [STANDARD] : []), ...Object.keys(gaussians)]);
    for (const [name, entry] of Object.entries(latent.mixtures || {})) {
      if (name === STANDARD || names.has(name)) throw fail("latent.mixtures", `has a bad or repeated prior name '${name}'`);
      if (entry.file === manifest.encoder.file || entry.file === manifest.decoder.file) throw fail(`latent.mixtures.${name}.file`, "must differ from the graphs' files");
      names.add(name);
    }
    if (latent.default_prior != null && !names.has(latent.default_prior)) throw fail("latent.default_prior", `names no prior of this bundle ('${latent.default_prior}'; known: ${[...names].sort().join(", ")})`);
    const prior = manifest.anomaly?.calibration?.prior;
    if (prior != null && prior !== STANDARD && !(prior in (latent.mixtures || {}))) throw fail("anomaly.calibration.prior", `must be 'standard' or a mixture of this bundle, got '${prior}'`);
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

export class BundleModel {
  constructor(manifest, decoder, loadEncoder, mixtures = {}) {
    this.manifest = manifest;
    this.name = manifest.name;
    this.kind = manifest.kind;
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

/** The graph's inputs and outputs: the contract's names in order, float32, its ranks and
 * sizes, and a symbolic batch axis (any name). */
function checkGraph(session, contract, label) {
  const want = (side) => contract[side].map((t) => t.name);
  for (const [side, got, meta] of [["inputs", session.inputNames, session.inputMetadata], ["outputs", session.outputNames, session.outputMetadata]]) {
    if (JSON.stringify(got) !== JSON.stringify(want(side)))
      throw new BundleError("graph", `${label} has ${side} ${JSON.stringify(got)} but the bundle contract needs ${JSON.stringify(want(side))} ${CHECK_PROBLEM}`);
    (meta || []).forEach((m, i) => {
      const need = contract[side][i].shape;
      const shape = m.shape || [];
      const sizes = shape.length === need.length && shape.slice(1).every((d, j) => d === need[j + 1]);
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
  const mixtures = {};
  for (const [name, entry] of Object.entries(manifest.latent.mixtures || {})) {
    const buffer = await read(entry.file);
    await checkDigest(buffer, entry, entry.file);
    mixtures[name] = checkMixture(readNpz(buffer, entry.file), manifest.latent.dim, entry.file);
  }
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
