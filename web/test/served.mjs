// Opens the page of each model a running `vae serve` serves, in headless Chromium (the
// system's, e.g. Debian's /usr/bin/chromium) with a fresh profile, and reports what a person
// would see: the status line, the prior menu, the sample grid (how many canvases, and the
// spread of each one's grey levels, 0 for a blank one), any page or console error and every
// answer of 400 or more ("404 for /favicon.ico").
//   node test/served.mjs BASE_URL OUT.json MODEL...
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, outFile, ...models] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "vaesdk-chromium-"));
const args = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync",
];
const context = await chromium.launchPersistentContext(profile, { executablePath, headless: true, args, viewport: { width: 1000, height: 580 } });
const results = [];
try {
  for (const model of models) {
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    // Console errors other than the failed loads, which are reported below with their URL.
    page.on("console", (m) => m.type() === "error" && !m.text().startsWith("Failed to load resource") && errors.push(m.text()));
    page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()}`));
    page.on("response", (r) => r.status() >= 400 && errors.push(`${r.status()} for ${new URL(r.url()).pathname}`));
    await page.goto(`${base}/?model=${encodeURIComponent(model)}`);
    await page.waitForFunction(() => /^(ready|error)/.test(document.querySelector("#status").textContent), null, { timeout: 60000 });
    const seen = await page.evaluate(() => ({
      status: document.querySelector("#status").textContent,
      title: document.querySelector("#model-name").textContent,
      priors: [...document.querySelectorAll("#prior option")].map((o) => o.value),
      body: document.body.innerText,
      samples: [...document.querySelectorAll("#grid canvas")].map((c) => {
        const { data } = c.getContext("2d").getImageData(0, 0, c.width, c.height);
        let sum = 0, sq = 0;
        for (let i = 0; i < data.length; i += 4) { sum += data[i]; sq += data[i] * data[i]; }
        const n = data.length / 4;
        return Math.sqrt(Math.max(0, sq / n - (sum / n) ** 2));
      }),
    }));
    results.push({ model, errors, ...seen });
    await page.close();
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
writeFileSync(outFile, JSON.stringify(results));
