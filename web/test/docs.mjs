// Opens `vae serve`'s /docs in headless Chromium (the system's) with every request to another
// origin refused, as on a machine without internet, and uses the form of one sample route the
// way a person would: expand it, "Try it out", "Execute". Writes what it saw as JSON.
//   node test/docs.mjs BASE_URL OPERATION_ID TAG OUT.json
import { writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [base, operationId, tag, outFile] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
const result = { external: [], errors: [], failed: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const origin = new URL(base).origin;
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) return route.continue();
    result.external.push(url);
    return route.abort();
  });
  page.on("pageerror", (e) => result.errors.push(e.message));
  page.on("response", (r) => { if (r.status() >= 400) result.failed.push(`${r.status()} for ${new URL(r.url()).pathname}`); });
  await page.goto(`${base}/docs`);
  await page.waitForSelector(".opblock", { timeout: 30000 });
  result.operations = await page.locator(".opblock").count();
  const block = page.locator(`#operations-${tag}-${operationId}`);
  await block.locator(".opblock-summary").click();
  await block.locator(".try-out__btn").click();
  const body = block.locator("textarea.body-param__text");
  result.body = JSON.parse(await body.inputValue());  // executed as the form fills it in
  await block.locator("button.execute").click();
  const status = block.locator(".live-responses-table tr.response .response-col_status").first();
  await status.waitFor({ timeout: 60000 });
  result.status = (await status.textContent()).trim();
  result.image = await block.locator(".live-responses-table img").count();
} finally {
  writeFileSync(outFile, JSON.stringify(result));
  await browser.close();
}
