// The onnxruntime-web files the page loads, committed in vendor/ so that the page is plain
// static files (served by `vae serve` from an installed wheel, or by any web server next to a
// bundle) and a wheel needs no npm; and the Swagger UI files of `vae serve`'s /docs, committed
// in docs-vendor/ so that /docs works without internet (FastAPI's default loads them from a CDN).
// Each folder's vendor.json pins its files: the locked version and integrity from
// package-lock.json, and each file's sha256 and size.
//
//   node copy-vendor.mjs          refresh both folders from node_modules (after `npm ci`) and rewrite the pins
//   node copy-vendor.mjs --check  verify them against the pins, the lock file and, when
//                                 installed, node_modules (npm ci runs this as postinstall)
//
// To move to another version: change it in package.json, `npm install`, `npm run vendor`,
// run the page's and the service's tests, and commit package*.json and the folder together.
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const VENDORED = [
  {
    // The wasm build only (no WebGPU/WebGL): the script index.html loads, the module it imports
    // and the binary that module instantiates (vae.js points ort.env.wasm.wasmPaths at vendor/).
    // onnxruntime-web's npm package carries no licence file; LICENSE is onnxruntime's (MIT, the
    // licence its package.json and the header of ort.wasm.min.js name), committed beside the files.
    package: "onnxruntime-web", folder: "vendor", dist: "dist", license: "MIT",
    files: ["ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"], committed: ["LICENSE"],
  },
  {
    // What FastAPI's Swagger UI page loads (serve/app.py serves them under /docs-assets/).
    package: "swagger-ui-dist", folder: "docs-vendor", dist: "", license: "Apache-2.0",
    files: ["swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "LICENSE", "NOTICE"], committed: [],
  },
];

function fail(message) {
  console.error(`web/copy-vendor.mjs: ${message}`);
  process.exit(1);
}

const sha256 = (path) => createHash("sha256").update(readFileSync(path)).digest("hex");

function locked(pkg) {
  const lock = JSON.parse(readFileSync(join(here, "package-lock.json"), "utf8"));
  const entry = lock.packages?.[`node_modules/${pkg}`];
  if (!entry) fail(`package-lock.json locks no ${pkg}; add it to package.json and run npm install`);
  return { version: entry.version, integrity: entry.integrity };
}

function refresh(v) {
  const vendor = join(here, v.folder);
  const dist = join(here, "node_modules", v.package, v.dist);
  const lock = locked(v.package);
  const installedManifest = join(here, "node_modules", v.package, "package.json");
  if (!existsSync(installedManifest)) fail(`node_modules has no ${v.package}; run \`npm ci\` in web/ first`);
  const installed = JSON.parse(readFileSync(installedManifest, "utf8")).version;
  if (installed !== lock.version) {
    fail(`node_modules holds ${v.package} ${installed} but package-lock.json locks ${lock.version}; run \`npm ci\` in web/ first`);
  }
  for (const file of v.committed) {
    if (!existsSync(join(vendor, file))) fail(`${v.folder}/${file} is missing; restore it from git`);
  }
  mkdirSync(vendor, { recursive: true });
  const files = {};
  for (const file of v.files) {
    copyFileSync(join(dist, file), join(vendor, file));
  }
  for (const file of [...v.files, ...v.committed]) {
    const bytes = readFileSync(join(vendor, file)).length;
    files[file] = { sha256: sha256(join(vendor, file)), bytes };
  }
  const record = { package: v.package, version: lock.version, integrity: lock.integrity, license: v.license, files };
  writeFileSync(join(vendor, "vendor.json"), JSON.stringify(record, null, 2) + "\n");
  console.log(`vendored ${v.package} ${lock.version} into ${vendor}`);
}

function check(v) {
  const vendor = join(here, v.folder);
  const dist = join(here, "node_modules", v.package, v.dist);
  const pins = join(vendor, "vendor.json");
  if (!existsSync(pins)) fail(`${v.folder}/vendor.json is missing; run \`npm run vendor\` in web/ (after \`npm ci\`)`);
  const record = JSON.parse(readFileSync(pins, "utf8"));
  const lock = locked(v.package);
  if (record.version !== lock.version || record.integrity !== lock.integrity) {
    fail(`${v.folder}/ holds ${v.package} ${record.version} but package-lock.json locks ${lock.version}; run \`npm run vendor\` in web/`);
  }
  const names = Object.keys(record.files).sort();
  const want = [...v.files, ...v.committed].sort();
  if (JSON.stringify(names) !== JSON.stringify(want)) {
    fail(`${v.folder}/vendor.json pins ${names.join(", ")}, expected ${want.join(", ")}; run \`npm run vendor\` in web/`);
  }
  for (const [file, { sha256: pinned }] of Object.entries(record.files)) {
    const path = join(vendor, file);
    if (!existsSync(path)) fail(`${v.folder}/${file} is missing; restore it from git or run \`npm run vendor\` in web/`);
    const got = sha256(path);
    if (got !== pinned) fail(`${v.folder}/${file} has sha256 ${got}, pinned ${pinned}; restore it from git or run \`npm run vendor\` in web/`);
    if (!v.committed.includes(file) && existsSync(join(dist, file)) && sha256(join(dist, file)) !== pinned) {
      fail(`${v.folder}/${file} differs from node_modules/${v.package}/${v.dist ? v.dist + "/" : ""}${file}; run \`npm run vendor\` in web/`);
    }
  }
  console.log(`${v.folder}/ holds ${v.package} ${record.version} as locked`);
}

for (const v of VENDORED) {
  if (process.argv.includes("--check")) check(v);
  else refresh(v);
}
