// Copies the onnxruntime-web files the page loads from node_modules into vendor/, so the
// page is plain static files (served by `vae serve`, or by any web server next to a bundle).
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "node_modules", "onnxruntime-web", "dist");
const vendor = join(here, "vendor");
mkdirSync(vendor, { recursive: true });
// The wasm build only (no WebGPU/WebGL): one script, its loader and its binary.
for (const file of ["ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"]) {
  copyFileSync(join(dist, file), join(vendor, file));
}
console.log(`copied onnxruntime-web into ${vendor}`);
