// The onnxruntime-web files the page loads, committed in vendor/ so that the page is plain
// static files (served by `vae serve` from an installed wheel, or by any web server next to a
// bundle) and a wheel needs no npm. vendor/vendor.json pins them: the locked version and
// integrity from package-lock.json, and each file's sha256 and size.
//
//   node copy-vendor.mjs          refresh vendor/ from node_modules (after `npm ci`) and rewrite the pins
//   node copy-vendor.mjs --check  verify vendor/ against the pins, the lock file and, when
//                                 installed, node_modules (npm ci runs this as postinstall)
//
// To move to another onnxruntime-web version: change it in package.json, `npm install`,
// `npm run vendor`, run the page's tests, and commit package*.json and vendor/ together.
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "vendor");
const pins = join(vendor, "vendor.json");
const dist = join(here, "node_modules", "onnxruntime-web", "dist");
const PACKAGE = "onnxruntime-web";
// The wasm build only (no WebGPU/WebGL): the script index.html loads, the module it imports
// and the binary that module instantiates (vae.js points ort.env.wasm.wasmPaths at vendor/).
const FILES = ["ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"];
// onnxruntime-web's npm package carries no licence file; this is onnxruntime's (MIT, the
// licence its package.json and the header of ort.wasm.min.js name), committed beside the files.
const LICENSE = "LICENSE";

function fail(message) {
  console.error(`web/copy-vendor.mjs: ${message}`);
  process.exit(1);
}

const sha256 = (path) => createHash("sha256").update(readFileSync(path)).digest("hex");

function locked() {
  const lock = JSON.parse(readFileSync(join(here, "package-lock.json"), "utf8"));
  const entry = lock.packages?.[`node_modules/${PACKAGE}`];
  if (!entry) fail(`package-lock.json locks no ${PACKAGE}; add it to package.json and run npm install`);
  return { version: entry.version, integrity: entry.integrity };
}

function refresh() {
  const lock = locked();
  const installedManifest = join(here, "node_modules", PACKAGE, "package.json");
  if (!existsSync(installedManifest)) fail(`node_modules has no ${PACKAGE}; run \`npm ci\` in web/ first`);
  const installed = JSON.parse(readFileSync(installedManifest, "utf8")).version;
  if (installed !== lock.version) {
    fail(`node_modules holds ${PACKAGE} ${installed} but package-lock.json locks ${lock.version}; run \`npm ci\` in web/ first`);
  }
  if (!existsSync(join(vendor, LICENSE))) fail(`vendor/${LICENSE} is missing; restore it from git`);
  mkdirSync(vendor, { recursive: true });
  const files = {};
  for (const file of FILES) {
    copyFileSync(join(dist, file), join(vendor, file));
  }
  for (const file of [...FILES, LICENSE]) {
    const bytes = readFileSync(join(vendor, file)).length;
    files[file] = { sha256: sha256(join(vendor, file)), bytes };
  }
  const record = { package: PACKAGE, version: lock.version, integrity: lock.integrity, license: "MIT", files };
  writeFileSync(pins, JSON.stringify(record, null, 2) + "\n");
  console.log(`vendored ${PACKAGE} ${lock.version} into ${vendor}`);
}

function check() {
  if (!existsSync(pins)) fail("vendor/vendor.json is missing; run `npm run vendor` in web/ (after `npm ci`)");
  const record = JSON.parse(readFileSync(pins, "utf8"));
  const lock = locked();
  if (record.version !== lock.version || record.integrity !== lock.integrity) {
    fail(`vendor/ holds ${PACKAGE} ${record.version} but package-lock.json locks ${lock.version}; run \`npm run vendor\` in web/`);
  }
  const names = Object.keys(record.files).sort();
  const want = [...FILES, LICENSE].sort();
  if (JSON.stringify(names) !== JSON.stringify(want)) {
    fail(`vendor/vendor.json pins ${names.join(", ")}, expected ${want.join(", ")}; run \`npm run vendor\` in web/`);
  }
  for (const [file, { sha256: pinned }] of Object.entries(record.files)) {
    const path = join(vendor, file);
    if (!existsSync(path)) fail(`vendor/${file} is missing; restore it from git or run \`npm run vendor\` in web/`);
    const got = sha256(path);
    if (got !== pinned) fail(`vendor/${file} has sha256 ${got}, pinned ${pinned}; restore it from git or run \`npm run vendor\` in web/`);
    if (file !== LICENSE && existsSync(join(dist, file)) && sha256(join(dist, file)) !== pinned) {
      fail(`vendor/${file} differs from node_modules/${PACKAGE}/dist/${file}; run \`npm run vendor\` in web/`);
    }
  }
  console.log(`vendor/ holds ${PACKAGE} ${record.version} as locked`);
}

if (process.argv.includes("--check")) check();
else refresh();
