// Drives the page in headless Chromium (the system's, e.g. Debian's /usr/bin/chromium):
// loads it, decodes the given latents through window.vae.decode, draws DRAWS latents from the
// page's default prior (seed 1), writes both and the page's priors as JSON, and saves a
// screenshot.
//   node test/page.mjs URL LATENTS.json OUT.json [SCREENSHOT.png]
import { readFileSync, writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, latentsFile, outFile, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 580 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(url);
  await page.evaluate(() => window.vae.ready.then(() => true));
  const latents = JSON.parse(readFileSync(latentsFile, "utf8"));
  const result = await page.evaluate(async (z) => {
    const out = await window.vae.decode(z);
    return { pixels: Array.from(out.pixels), n: out.n, height: out.height, width: out.width, channels: out.channels };
  }, latents);
  const draws = Number(process.env.DRAWS || 0);
  Object.assign(result, await page.evaluate(async (n) => {
    const model = await window.vae.ready;
    const z = n ? Array.from(model.sample(n, { seed: 1 })) : [];
    return { priors: [...model.priors.keys()], defaultPrior: model.defaultPrior, draws: z };
  }, draws));
  result.status = await page.textContent("#status");
  // Which of the page's control groups show: a flat bundle's page shows no spatial controls.
  result.visible = Object.fromEntries(await Promise.all(["#sample", "#grid", "#sliders", "#size-controls"].map(async (id) => [id, await page.isVisible(id)])));
  result.errors = errors;
  writeFileSync(outFile, JSON.stringify(result));
  if (screenshot) await page.screenshot({ path: screenshot });
} finally {
  await browser.close();
}
