// Drives the page of a bundle with spatial latents in headless Chromium: loads it, decodes the
// given latents at their size and reconstructs the given pixels through window.vae, picks an
// image file in the page's file input and waits for its reconstruction, decodes noise in tiles,
// then asks for a size the model does not take. Writes what it saw as JSON, and a screenshot.
//   node test/spatial.mjs URL INPUT.json IMAGE.png OUT.json [SCREENSHOT.png]
// INPUT.json: {z: [N * C * h * w numbers], height, width, pixels: [H * W * C], image_height, image_width, tiled_height, bad_height}
import { readFileSync, writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, inputFile, imageFile, outFile, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 580 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(url);
  await page.evaluate(() => window.vae.ready.then(() => true));
  const result = { readyStatus: await page.textContent("#status") };
  result.visible = Object.fromEntries(await Promise.all(["#sample", "#grid", "#sliders", "#prior", "#size-controls"].map(async (id) => [id, await page.isVisible(id)])));
  const input = JSON.parse(readFileSync(inputFile, "utf8"));
  Object.assign(result, await page.evaluate(async (i) => {
    const decoded = await window.vae.decode(Float32Array.from(i.z), { height: i.height, width: i.width });
    const rebuilt = await window.vae.reconstruct(Uint8Array.from(i.pixels), { height: i.image_height, width: i.image_width });
    let sampled = null;
    try {
      await window.vae.sample(1, { seed: 0 });
    } catch (e) {
      sampled = `${e.name}: ${e.message}`;
    }
    return { decoded: { ...decoded, pixels: Array.from(decoded.pixels) }, rebuilt: { ...rebuilt, pixels: Array.from(rebuilt.pixels) }, sampled };
  }, input));
  await page.setInputFiles("#file", imageFile);
  await page.waitForFunction(() => /reconstructed|error/.test(document.getElementById("status").textContent));
  result.fileStatus = await page.textContent("#status");
  result.shown = await page.evaluate(() => ["original", "current"].map((id) => [document.getElementById(id).height, document.getElementById(id).width]));
  result.sizeInputs = [await page.inputValue("#height"), await page.inputValue("#width")];
  if (screenshot) await page.screenshot({ path: screenshot });
  await page.check("#tiled");
  await page.fill("#height", String(input.tiled_height));
  await page.click("#decode-noise");
  await page.waitForFunction((h) => new RegExp(`^decoded noise at ${h}x|^error`).test(document.getElementById("status").textContent), input.tiled_height);
  result.tiledStatus = await page.textContent("#status");
  result.tileSide = await page.textContent("#tile-side");
  await page.fill("#height", String(input.bad_height));
  await page.click("#decode-noise");
  await page.waitForFunction(() => /^error/.test(document.getElementById("status").textContent));
  result.badSizeStatus = await page.textContent("#status");
  result.errors = errors;
  writeFileSync(outFile, JSON.stringify(result));
} finally {
  await browser.close();
}
