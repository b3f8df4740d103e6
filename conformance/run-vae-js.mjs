// Runs the conformance vectors of conformance/v2/ and conformance/v3/ against web/vae.js under
// Node, with onnxruntime-web's wasm build from web/node_modules (`npm ci` in web/) and the
// manifest schema compiled by ajv in strict mode (`npm ci` here).
//
//   node conformance/run-vae-js.mjs [OUT.json]
//
// Prints one summary line and exits 1 when a vector that applies to vae.js fails. Not for
// vae.js: the score vectors (the page computes no likelihoods), pixel draws from uniforms, and
// the bundle cases of the float16 decoder's file (`variant: "fp16"`: vae.js does not read it).
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Ajv2020 from "ajv/dist/2020.js";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..");
const ort = await import(join(repo, "web/node_modules/onnxruntime-web/dist/ort.node.min.mjs"));
globalThis.ort = ort;
ort.env.wasm.numThreads = 1;
const vae = await import(join(repo, "web/vae.js"));

// The folder being run (v2, then v3): its root, index and tolerances.
let root;
let index;
let tol;
/** Thrown by a case this harness does not apply to vae.js. */
class NotApplicable extends Error {}
const results = { passed: 0, failed: 0, not_applicable: 0, pixels_at_a_half_level: 0, failures: [], by_section: {} };

// ---- .npy files of the vectors (plain little-endian arrays) ---------------------------------

function npy(name) {
  const bytes = readFileSync(join(root, name));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const start = bytes[6] === 1 ? 10 : 12;
  const length = bytes[6] === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const header = bytes.subarray(start, start + length).toString("latin1");
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(",").filter((x) => x.trim()).map(Number);
  const body = bytes.subarray(start + length);
  const copy = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength);
  const kinds = { "<f4": Float32Array, "<f8": Float64Array, "|u1": Uint8Array, "<i8": BigInt64Array };
  if (!kinds[descr]) throw new Error(`${name}: unexpected dtype ${descr}`);
  return { shape, data: new kinds[descr](copy) };
}

// ---- checks ---------------------------------------------------------------------------------

function close(got, want, { rtol = 0, atol = 0 }, what) {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} values, expected ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= atol + rtol * Math.abs(want[i]))) throw new Error(`${what}[${i}] is ${got[i]}, expected ${want[i]}`);
  }
}

/** uint8 NHWC images equal, except next to a half level of the reference (NCHW floats). */
function samePixels(got, want, referenceNCHW, [n, h, w, c], what) {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} pixels, expected ${want.length}`);
  let off = 0;
  for (let k = 0; k < n; k++)
    for (let ch = 0; ch < c; ch++)
      for (let p = 0; p < h * w; p++) {
        const i = (k * h * w + p) * c + ch;
        if (got[i] === want[i]) continue;
        const level = referenceNCHW[(k * c + ch) * h * w + p] * 255;
        const near = Math.abs(level - Math.floor(level) - 0.5) <= tol.pixel_boundary.grey_levels;
        if (near && Math.abs(got[i] - want[i]) === 1) results.pixels_at_a_half_level++;
        else off++;
      }
  if (off) throw new Error(`${what}: ${off} pixels differ`);
}

function fileReader(folder) {
  return async (name) => {
    try {
      const b = readFileSync(join(folder, name));
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    } catch (e) {
      if (e.code === "ENOENT") throw new vae.BundleError("missing-file", `${join(folder, name)} is missing`);
      throw e;
    }
  };
}

const bundleDir = (name) => resolve(root, index.bundles[name].path);
const models = new Map();
async function model(name) {
  const dir = bundleDir(name);
  if (!models.has(dir)) models.set(dir, await vae.openBundle(fileReader(dir), { validate }));
  return models.get(dir);
}

const schema = JSON.parse(readFileSync(join(repo, "vaesdk/manifest.schema.json"), "utf8"));
const ajv = new Ajv2020({ strict: true, allErrors: true });
const schemaCheck = ajv.compile(schema); // throws unless the schema is strict-mode clean
function validate(manifest) {
  if (!schemaCheck(manifest)) {
    const e = schemaCheck.errors[0];
    throw new vae.BundleError("manifest", `invalid manifest: ${e.instancePath || "/"} ${e.message} (vaesdk/manifest.schema.json)`);
  }
}

async function verdictOf(fn) {
  try {
    await fn();
    return { verdict: "valid" };
  } catch (e) {
    if (!(e instanceof vae.BundleError)) throw e;
    return { verdict: "invalid", category: e.category, message: e.message };
  }
}

function expectVerdict(got, c) {
  if (got.verdict !== c.verdict || (c.verdict === "invalid" && got.category !== c.category))
    throw new Error(`verdict ${got.verdict}${got.category ? ` (${got.category}: ${got.message})` : ""}, expected ${c.verdict}${c.category ? ` (${c.category})` : ""}`);
}

// ---- the sections of v2/ ------------------------------------------------------------------------

const v2 = {
  async manifests(c) {
    const raw = readFileSync(join(root, c.file));
    const buffer = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
    let parsed = null;
    try {
      parsed = vae.parseManifest(buffer);
    } catch (e) {
      if (!(e instanceof vae.BundleError)) throw e;
    }
    if (c.schema_valid !== null) {
      // ajv's verdict on the parsed JSON must be the one jsonschema gave (the vector's).
      const schemaVerdict = schemaCheck(JSON.parse(new TextDecoder().decode(raw)));
      if (schemaVerdict !== c.schema_valid) throw new Error(`ajv says the schema ${schemaVerdict ? "accepts" : "refuses"} it; jsonschema ${c.schema_valid ? "accepts" : "refuses"} it`);
    }
    expectVerdict(await verdictOf(() => {
      const m = vae.parseManifest(buffer);
      vae.checkVersion(m);
      validate(m);
      vae.checkManifest(m);
    }), c);
    if (c.verdict === "valid") {
      const { names, defaultPrior } = vae.priorNames(parsed);
      if (JSON.stringify(names) !== JSON.stringify(c.priors) || defaultPrior !== c.default_prior)
        throw new Error(`priors ${names} (default ${defaultPrior}), expected ${c.priors} (default ${c.default_prior})`);
    }
  },

  async bundle_cases(c) {
    const folder = mkdtempSync(join(tmpdir(), "vae-conformance-"));
    try {
      const base = bundleDir(c.base);
      for (const f of readdirSync(base)) copyFileSync(join(base, f), join(folder, f));
      for (const [name, source] of Object.entries(c.overlay || {})) {
        if (source === null) rmSync(join(folder, name), { force: true });
        else copyFileSync(source.file ? join(root, source.file) : join(base, source.copy), join(folder, name));
      }
      expectVerdict(await verdictOf(async () => {
        const m = await vae.openBundle(fileReader(folder), { validate });
        if (!m.geometry.spatial) await m.encodePosterior(new Uint8Array(m.height * m.width * m.channels)); // reads and checks the encoder
        else {
          // Every declared side is symbolic: running each graph once shows the sizes it computes.
          const [height, width] = m.geometry.probeSize();
          const [c, h, w] = m.geometry.latentShape(height, width);
          await m.encodePosterior(new Uint8Array(height * width * m.channels), { height, width });
          await m.decodeMean(new Float32Array(c * h * w), { height, width });
        }
      }), c);
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  },

  async pixels(c) {
    const mean = npy(c.mean);
    const [n, ch, h, w] = mean.shape;
    if (c.error) {
      let category = null;
      try {
        vae.toPixels(mean.data, n, ch, h, w);
      } catch (e) {
        category = e.category;
      }
      if (category !== c.error) throw new Error(`converted, or refused as ${category}; expected a ${c.error} refusal`);
      return;
    }
    const got = vae.toPixels(mean.data, n, ch, h, w);
    const want = npy(c.expected).data;
    for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) throw new Error(`pixel ${i} is ${got[i]}, expected ${want[i]} (mean ${mean.data[i]})`);
  },

  async decode(c) {
    const m = await model(c.bundle);
    const z = npy(c.z).data;
    const reference = npy(c.mean).data;
    close(await m.decodeMean(z), reference, tol.encoder_mean, "decoder mean");
    const want = npy(c.expected);
    samePixels((await m.decode(z)).pixels, want.data, reference, want.shape, "pixels");
  },

  async encode(c) {
    const m = await model(c.bundle);
    const post = await m.encodePosterior(npy(c.images).data);
    close(post.mean, npy(c.mean).data, tol.encoder_mean, "mean");
    if (c.logvar) close(post.logvar, npy(c.logvar).data, tol.encoder_mean, "logvar");
    else if (post.logvar !== null) throw new Error("a plain autoencoder gave a logvar");
  },

  async prior_draws(c) {
    const m = await model(c.bundle);
    const noise = vae.noiseFrom(npy(c.normals).data, c.uniforms ? npy(c.uniforms).data : []);
    const z = m.sample(c.n, { noise, prior: c.prior, temperature: c.temperature, truncation: c.truncation });
    close(z, npy(c.expected).data, tol.latent, "z");
    const used = noise.used;
    if (used.normals !== c.normals_used || used.uniforms !== (c.uniforms ? c.n : 0))
      throw new Error(`used ${used.normals} normals and ${used.uniforms} uniforms; expected ${c.normals_used} and ${c.uniforms ? c.n : 0}`);
  },

  async posterior_draws(c) {
    const z = vae.posteriorSample(npy(c.mean).data, npy(c.logvar).data, npy(c.eps).data);
    close(z, npy(c.expected).data, tol.latent, "z");
  },

  async pixel_draws(c) {
    // vae.js draws Gaussian pixels; Bernoulli and continuous Bernoulli draws are the SDK's only.
    if (!c.eps) throw new NotApplicable();
    const m = await model(c.bundle);
    if (m.rank !== c.rank) throw new Error(`rank ${m.rank}, expected ${c.rank}`);
    const out = await m.decodeSample(npy(c.z).data, npy(c.eps).data);
    const x = npy(c.x).data;
    close(out.x, x, tol.encoder_mean, "x");
    const want = npy(c.expected);
    samePixels(out.pixels, want.data, x, want.shape, "pixels");
  },

  scores: null, // not applicable: the page computes no likelihoods or anomaly scores
};

// ---- the sections of v3/ ------------------------------------------------------------------------

/** A decoder mean in the pixel range [lo, hi] -> [0, 1] units, for the half-level allowance. */
const unitRange = (mean, [lo, hi]) => Float32Array.from(mean, (m) => (m - lo) / (hi - lo));

/** Equal as JSON values (numbers by value: 1.0 and 1 are equal). */
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

function geometryRecord(g) {
  const [image, latent] = g.graphShapes();
  return { image, latent, range: g.range, multiple: g.multiple, factor: g.factor, latent_dim: g.latentDim, scaling_factor: g.scalingFactor, shift_factor: g.shiftFactor };
}

async function refusedAs(category, fn) {
  try {
    await fn();
  } catch (e) {
    if (e instanceof vae.OperationError && e.category === category) return;
    throw new Error(`refused as ${e.name} ${e.category ?? ""} (${e.message}); expected an OperationError "${category}"`);
  }
  throw new Error(`not refused; expected an OperationError "${category}"`);
}

const v3 = {
  async manifests(c) {
    await v2.manifests(c);
    // vae.js's own checks, without the schema, give the same verdict: the page has no schema validator.
    const raw = readFileSync(join(root, c.file));
    const buffer = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
    expectVerdict(await verdictOf(() => vae.checkManifest(vae.parseManifest(buffer))), c);
    if (c.verdict === "valid") {
      const got = geometryRecord(vae.Geometry.fromManifest(vae.parseManifest(buffer)));
      if (!same(got, c.geometry)) throw new Error(`geometry ${JSON.stringify(got)}, expected ${JSON.stringify(c.geometry)}`);
    }
  },

  async bundle_cases(c) {
    if (c.variant === "fp16") throw new NotApplicable(); // vae.js does not read the float16 decoder
    await v2.bundle_cases(c);
  },

  async pixels_in(c) {
    const images = npy(c.images);
    const [n, h, w, ch] = images.shape;
    const got = vae.fromPixels(images.data, n, ch, h, w, c.range);
    const want = npy(c.expected).data;
    for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) throw new Error(`value ${i} is ${got[i]}, expected ${want[i]}`);
  },

  async pixels_out(c) {
    const mean = npy(c.mean);
    const [n, ch, h, w] = mean.shape;
    if (c.error) {
      let category = null;
      try {
        vae.toPixels(mean.data, n, ch, h, w, c.range);
      } catch (e) {
        category = e.category;
      }
      if (category !== c.error) throw new Error(`converted, or refused as ${category}; expected a ${c.error} refusal`);
      return;
    }
    const got = vae.toPixels(mean.data, n, ch, h, w, c.range);
    const want = npy(c.expected).data;
    for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) throw new Error(`pixel ${i} is ${got[i]}, expected ${want[i]}`);
  },

  async latent_scaling(c) {
    const exact = (got, want, what) => {
      for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) throw new Error(`${what}[${i}] is ${got[i]}, expected ${want[i]}`);
    };
    exact(vae.toDiffusion(npy(c.z).data, c.scaling_factor, c.shift_factor), npy(c.to_diffusion).data, "to_diffusion");
    exact(vae.fromDiffusion(npy(c.z_diffusion).data, c.scaling_factor, c.shift_factor), npy(c.from_diffusion).data, "from_diffusion");
  },

  async tiles(c) {
    if (c.error) {
      await refusedAs(c.error, () => vae.tilePlan(c.height, c.width, c.tile, c.overlap));
      return;
    }
    const starts = [vae.tileStarts(c.height, c.tile, c.overlap), vae.tileStarts(c.width, c.tile, c.overlap)];
    if (!same(starts, [c.starts_y, c.starts_x])) throw new Error(`starts ${JSON.stringify(starts)}, expected ${JSON.stringify([c.starts_y, c.starts_x])}`);
    const plan = vae.tilePlan(c.height, c.width, c.tile, c.overlap).map((t) => [t.y, t.x, t.h, t.w]);
    if (!same(plan, c.tiles)) throw new Error(`plan ${JSON.stringify(plan)}, expected ${JSON.stringify(c.tiles)}`);
    // Tile k of the plan outputs k + 1 everywhere.
    let k = 0;
    const constant = async (part, t) => [new Float32Array(Math.floor((t.h * c.num) / c.den) * Math.floor((t.w * c.num) / c.den)).fill(++k)];
    const [blend] = await vae.runTiled(new Float32Array(c.height * c.width), [1, c.height, c.width], constant, c.tile, c.overlap, c.num, c.den);
    close(blend, npy(c.expected).data, tol.blend, "blend");
  },

  async decode(c) {
    const m = await model(c.bundle);
    const size = { height: c.height, width: c.width, tileSize: c.tile_size };
    const z = npy(c.z).data;
    const reference = npy(c.mean).data;
    close(await m.decodeMean(z, size), reference, tol.encoder_mean, "decoder mean");
    const want = npy(c.expected);
    samePixels((await m.decode(z, size)).pixels, want.data, unitRange(reference, m.geometry.range), want.shape, "pixels");
  },

  async encode(c) {
    const m = await model(c.bundle);
    const post = await m.encodePosterior(npy(c.images).data, { height: c.height, width: c.width, tileSize: c.tile_size });
    close(post.mean, npy(c.mean).data, tol.encoder_mean, "mean");
    if (c.logvar) close(post.logvar, npy(c.logvar).data, tol.encoder_mean, "logvar");
    else if (post.logvar !== null) throw new Error("a plain autoencoder gave a logvar");
  },

  async tiled_decode(c) {
    const m = await model(c.bundle);
    const f = m.geometry.factor;
    if (c.tile !== c.tile_size / f || c.overlap !== Math.floor(c.tile / 4)) throw new Error(`tile ${c.tile} and overlap ${c.overlap} are not vae.js's for tile_size ${c.tile_size}`);
    await v3.decode(c);
  },

  async tiled_encode(c) {
    const m = await model(c.bundle);
    const f = m.geometry.factor;
    if (c.tile !== c.tile_size || c.overlap !== Math.floor(c.tile_size / 4 / f) * f) throw new Error(`tile ${c.tile} and overlap ${c.overlap} are not vae.js's for tile_size ${c.tile_size}`);
    await v3.encode(c);
  },

  posterior_draws: v2.posterior_draws,

  async refusals(c) {
    const m = await model(c.bundle);
    const f = m.geometry.factor;
    if (c.operation === "sample") return refusedAs(c.category, () => m.sample(1, { seed: 0 }));
    const size = (s) => c.shape.reduce((a, b) => a * b, 1) + s;
    if (c.operation === "decode")
      return refusedAs(c.category, () => m.decode(new Float32Array(size(0)), { height: c.shape[2] * f, width: c.shape[3] * f, tileSize: c.tile_size }));
    return refusedAs(c.category, () => m.encode(new Uint8Array(size(0)), { height: c.shape[1], width: c.shape[2] }));
  },
};

for (const [version, sections] of [[2, v2], [3, v3]]) {
  root = join(here, `v${version}`);
  index = JSON.parse(readFileSync(join(root, "index.json"), "utf8"));
  tol = index.tolerances;
  for (const [section, run] of Object.entries(sections)) {
    const tally = { passed: 0, failed: 0, not_applicable: 0 };
    for (const c of index[section]) {
      if (!run) {
        tally.not_applicable++;
        continue;
      }
      try {
        await run(c);
        tally.passed++;
      } catch (e) {
        if (e instanceof NotApplicable) {
          tally.not_applicable++;
          continue;
        }
        tally.failed++;
        results.failures.push(`v${version}/${section}/${c.id}: ${e.message}`);
      }
    }
    results.by_section[`v${version}/${section}`] = tally;
    for (const k of ["passed", "failed", "not_applicable"]) results[k] += tally[k];
  }
  const missing = Object.keys(index).filter((k) => Array.isArray(index[k]) && !(k in sections));
  if (missing.length) results.failures.push(`sections of v${version} this harness does not know: ${missing.join(", ")}`);
}
if (process.argv[2]) writeFileSync(process.argv[2], JSON.stringify(results, null, 1));
console.log(`vae.js: ${results.passed} passed, ${results.failed} failed, ${results.not_applicable} not applicable; ${results.pixels_at_a_half_level} pixels one level off at a half level (${Object.entries(results.by_section).map(([k, v]) => `${k} ${v.passed}/${v.passed + v.failed}`).join(", ")})`);
for (const f of results.failures.slice(0, 40)) console.log(`  ${f}`);
process.exit(results.failures.length ? 1 : 0);
