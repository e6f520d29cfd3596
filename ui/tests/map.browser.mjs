// The browser test of the map, driven by the Rust test
// crates/palisade-server/tests/api/browser.rs, which starts the server,
// applies examples/three-tier and produces the flows.
//
// Talks with the Rust side over stdin/stdout, one line each way:
//   this script prints "READY" once the map shows the groups;
//   the Rust side then produces traffic and writes one JSON line
//   {"deniedEdge": "...", "rule": "..."} naming the denied flow to expect.
//
// Headless Chromium (Debian's /usr/bin/chromium) through playwright-core.
// Exits 0 when every check passed, 1 with the reason otherwise; saves a
// screenshot either way.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const url = required("PALISADE_URL");
const token = process.env.PALISADE_TOKEN ?? "";
const screenshot = required("SCREENSHOT");
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const TIMEOUT = 20_000;

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return value;
}

function step(text) {
  console.log(`step: ${text}`);
}

function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function nextLine() {
  const { value, done } = await lines.next();
  check(!done, "the Rust side closed stdin before naming the denied flow");
  return value;
}

// Without the background-networking flags Chromium keeps calling out to
// Google services, which a closed network answers with nothing but waits.
const args = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const profile = mkdtempSync(join(tmpdir(), "palisade-ui-test-"));
let context;
let page;
let status = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args,
    viewport: { width: 1400, height: 1000 },
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  page.on("console", (message) => {
    if (message.type() === "error") {
      console.log(`browser console: ${message.text()}`);
    }
  });

  step(`open ${url}/ui/`);
  await page.goto(`${url}/ui/`);
  if (token) {
    step("the server wants a token: paste it into the dialog");
    await page.locator("#token-dialog").waitFor({ state: "visible" });
    await page.fill("#token-input", token);
    await page.click("#token-save");
  }

  step("the map shows the groups of three-tier");
  await page.waitForFunction(() => window.palisadeMap?.nodes().length >= 4);
  const nodes = await page.evaluate(() => {
    const cy = window.palisadeMap;
    const box = cy.container().getBoundingClientRect();
    return cy.nodes().map((n) => {
      const p = n.renderedPosition();
      return {
        id: n.id(),
        label: n.data("label"),
        inside: p.x > 0 && p.y > 0 && p.x < box.width && p.y < box.height,
      };
    });
  });
  const ids = nodes.map((n) => n.id).sort();
  check(
    JSON.stringify(ids) === JSON.stringify(["app=app", "app=db", "app=web", "world"]),
    `the map's groups are ${JSON.stringify(ids)}`,
  );
  check(nodes.every((n) => n.inside), `a group is drawn outside the map: ${JSON.stringify(nodes)}`);
  const painted = await page.evaluate(() =>
    [...window.palisadeMap.container().querySelectorAll("canvas")].some((canvas) => {
      const context = canvas.getContext("2d");
      if (!context || canvas.width === 0 || canvas.height === 0) {
        return false;
      }
      const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 3; i < pixels.length; i += 4) {
        if (pixels[i] !== 0) {
          return true;
        }
      }
      return false;
    }),
  );
  check(painted, "the map's canvas is blank: nothing was drawn");
  const webToApp = await page.evaluate(() => window.palisadeMap.$id("policy:app=web->app=app").data("label"));
  check(webToApp?.includes("tcp/8080"), `the policy edge web -> app reads ${webToApp}`);
  check(
    await page.evaluate(() => window.palisadeMap.$id("policy:app=db->app=app").empty()),
    "the map shows a policy edge db -> app, which the policy does not allow",
  );
  await page.locator("#rules tbody tr").first().waitFor();

  console.log("READY");
  const expected = JSON.parse(await nextLine());
  step(`the denied flow ${expected.deniedEdge} appears in the denied colour`);
  await page.waitForFunction((id) => window.palisadeMap.$id(id).nonempty(), expected.deniedEdge);
  const colour = await page.evaluate((id) => window.palisadeMap.$id(id).style("line-color"), expected.deniedEdge);
  check(colour === "rgb(211,60,60)", `the denied edge is drawn in ${colour}, not red`);
  await page.locator("#denied-list li", { hasText: expected.rule }).first().waitFor();

  step("clicking the denied edge shows the rule that denied it");
  const at = await page.evaluate((id) => {
    const cy = window.palisadeMap;
    const box = cy.container().getBoundingClientRect();
    const mid = cy.$id(id).renderedMidpoint();
    return { x: box.left + mid.x, y: box.top + mid.y };
  }, expected.deniedEdge);
  await page.mouse.click(at.x, at.y);
  const deniedBy = page.locator("#details .denied-by .rule", { hasText: expected.rule });
  await deniedBy.first().waitFor();
  check(
    await page.evaluate((id) => window.palisadeMap.$id(id).selected(), expected.deniedEdge),
    "the click did not select the denied edge",
  );

  step("explain asks the server which rule decides the flow");
  await page.locator("#details li.flow.deny .explain-button").first().click();
  const explained = page.locator("#details pre.explain", { hasText: "DENY" });
  await explained.first().waitFor();
  const text = await explained.first().textContent();
  check(text.includes(expected.explain), `explain says: ${text}`);

  step("the policy list shows the rule hits the agents counted (polled every 5 s)");
  await page.waitForFunction(
    (rule) => {
      const row = document.querySelector(`#rules tr[data-rule="${rule}"]`);
      return row && row.cells[3].textContent === "1";
    },
    expected.hitRule,
    { timeout: 15_000 },
  );
  check(
    (await page.locator("#rules tr.never").count()) > 0,
    "no rule is marked as never matched, yet three-tier has rules no flow used",
  );

  step("another tenant's flows never reach this tenant's page");
  check(!(await page.content()).includes("globex"), "the acme user's page shows globex");

  check(errors.length === 0, `the page threw: ${errors.join("; ")}`);
  step("all checks passed");
} catch (error) {
  console.error(`FAILED: ${error.message}`);
  status = 1;
} finally {
  if (page) {
    await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
    console.log(`screenshot: ${screenshot}`);
  }
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(status);
