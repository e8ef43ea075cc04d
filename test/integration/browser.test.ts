import fs from "node:fs";
import path from "node:path";
import { Browser, chromium } from "playwright-core";
import { startTestStack, TestStack } from "../support/stack";

// The operator's pages in a real headless Chromium (Debian's, installed by scripts/setup.sh test): Bull Board behind
// the ?key= cookie flow, and Swagger UI's "Try it out" → "Execute". Screenshots go to build/ for a human look.
const KEY = "browser-admin-key-42";
const BUILD = path.resolve(__dirname, "..", "..", "build");
const CHROMIUM = process.env.PIXELAI_CHROMIUM ?? "/usr/bin/chromium";
// docs/environment.md "Browser checks": no sandbox (containers), no GPU, and nothing that phones home.
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

let stack: TestStack;
let browser: Browser;

beforeAll(async () => {
  fs.mkdirSync(BUILD, { recursive: true });
  // API role only: the pages need Redis and the database, not a runner.
  stack = await startTestStack({ PIXELAI_API_KEY: KEY }, { api: true, worker: false });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
});

afterAll(async () => {
  await browser?.close();
  await stack?.close();
});

it("opens Bull Board with ?key=, drops the key from the URL, and lists both queues", async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const res = await page.goto(`${stack.url}/admin/queues?key=${encodeURIComponent(KEY)}`);
  expect(res?.status()).toBe(200);
  expect(new URL(page.url()).search).toBe(""); // the 303 took the key out of the address bar
  await page.getByText("generate", { exact: true }).first().waitFor({ timeout: 30_000 });
  await page.getByText("convert", { exact: true }).first().waitFor({ timeout: 30_000 });
  const cookies = await context.cookies();
  expect(cookies.find((c) => c.name === "pixelai_admin")).toMatchObject({ httpOnly: true, sameSite: "Strict", path: "/admin/queues" });
  await page.screenshot({ path: path.join(BUILD, "bull-board.png"), fullPage: true });

  // a fresh browser without the cookie is turned away
  const stranger = await browser.newContext();
  const denied = await (await stranger.newPage()).goto(`${stack.url}/admin/queues`);
  expect(denied?.status()).toBe(401);
  await stranger.close();
  await context.close();
});

it("runs GET /health from Swagger UI (Try it out → Execute) and renders the 200 body", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  await page.goto(`${stack.url}/docs/`);
  const operation = page.locator(".opblock-get", { has: page.locator('[data-path="/health"]') }).first();
  await operation.locator(".opblock-summary").click();
  await operation.getByRole("button", { name: "Try it out" }).click();
  await operation.getByRole("button", { name: "Execute" }).click();
  // the table's body row (its header row has the same column classes)
  const response = operation.locator(".live-responses-table tr.response");
  await response.locator(".response-col_status").waitFor({ timeout: 30_000 });
  expect((await response.locator(".response-col_status").innerText()).trim()).toBe("200");
  const body = await response.locator(".response-col_description .microlight").first().innerText();
  expect(JSON.parse(body)).toMatchObject({ status: "healthy" });
  await operation.screenshot({ path: path.join(BUILD, "swagger-health.png") }); // just the operation: the page is long
  await page.close();
});
