// The website in headless Chromium (Debian's, driven by playwright-core) against the real
// server that tests/web.rs started and filled. Every page is screenshotted (light and dark)
// and scanned by axe-core: no serious or critical violation is allowed.
//
// Environment (set by tests/web.rs): BASE_URL, CHROMIUM, NERVIX_BIN, SCREENSHOT_DIR,
// ADMIN_TOKEN, AGENT (handle), AGENT_KEY (its key file), HOSTILE (handle of the agent named
// <script>alert(1)</script>), TASK_TITLE (its submission is held for a spot check),
// WORKFLOW_ID, BYSTANDER (an agent the admin suspends and reinstates).

import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) { throw new Error(`${name} is not set`); }
  return v;
};
const BASE = env("BASE_URL");
const SHOTS = env("SCREENSHOT_DIR");
const AGENT = env("AGENT");
const HOSTILE_NAME = "<script>alert(1)</script>";
mkdirSync(SHOTS, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

let passed = 0;
let failed = 0;
async function check(name, fn) {
  const started = Date.now();
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}
function assert(cond, message) { if (!cond) { throw new Error(message); } }

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const newContext = async () => {
  const c = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  c.setDefaultTimeout(15000);
  return c;
};

/// The security headers every page must carry.
function checkHeaders(response, path) {
  const h = response.headers();
  const csp = h["content-security-policy"] || "";
  assert(csp.includes("script-src 'self'") && !csp.includes("unsafe-inline"), `${path}: CSP ${csp}`);
  assert(csp.includes("frame-ancestors 'none'"), `${path}: CSP without frame-ancestors`);
  assert(h["x-frame-options"] === "DENY", `${path}: X-Frame-Options ${h["x-frame-options"]}`);
  assert(h["x-content-type-options"] === "nosniff", `${path}: nosniff missing`);
  assert(h["referrer-policy"], `${path}: Referrer-Policy missing`);
}

/// Screenshots the page in light and dark, and scans each with axe-core.
async function audit(page, name) {
  for (const scheme of ["light", "dark"]) {
    await page.emulateMedia({ colorScheme: scheme });
    await page.screenshot({ path: `${SHOTS}/${name}-${scheme}.png`, fullPage: true });
    await page.evaluate(axeSource);
    const result = await page.evaluate(() =>
      window.axe.run(document, { resultTypes: ["violations"] }));
    const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
    assert(bad.length === 0, `${name} (${scheme}): axe: ` + JSON.stringify(bad.map((v) => ({
      id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target),
    }))));
  }
  await page.emulateMedia({ colorScheme: "light" });
}

async function visit(page, path, name) {
  const response = await page.goto(BASE + path);
  assert(response.status() === 200, `${path}: status ${response.status()}`);
  checkHeaders(response, path);
  await audit(page, name);
  return response;
}

/// Submits a form built in the page (same origin, with the session cookie) and returns the
/// response's status: how a CSRF refusal is seen by a browser.
async function postForm(page, path, fields) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url() === BASE + path && r.request().method() === "POST"),
    page.waitForNavigation(),
    page.evaluate(({ path, fields }) => {
      const form = document.createElement("form");
      form.method = "post";
      form.action = path;
      for (const [k, v] of Object.entries(fields)) {
        const input = document.createElement("input");
        input.type = "hidden";
        input.name = k;
        input.value = v;
        form.appendChild(input);
      }
      document.body.appendChild(form);
      form.submit();
    }, { path, fields }),
  ]);
  return response.status();
}

const anon = await (await newContext()).newPage();
let dialogs = 0;
anon.on("dialog", async (d) => { dialogs += 1; await d.dismiss(); });

await check("public pages render with security headers and pass axe", async () => {
  await visit(anon, "/", "landing");
  assert(await anon.locator("#online").count() === 1, "live counters on /");
  await visit(anon, "/agents", "agents");
  await visit(anon, `/agents?capability=writing&level=novice`, "agents-filtered");
  await visit(anon, "/docs", "docs");
  const ops = await anon.locator("details.op").count();
  assert(ops > 20, `the API reference lists the routes (${ops})`);
  assert(await anon.getByText("nervix agent run").count() > 0, "quickstart");
});

await check("an agent named <script>alert(1)</script> is shown as text", async () => {
  await anon.goto(BASE + "/agents");
  await anon.getByText(HOSTILE_NAME, { exact: true }).first().waitFor();
  await anon.goto(BASE + "/agents/" + env("HOSTILE"));
  await anon.getByRole("heading", { level: 1 }).getByText(HOSTILE_NAME).waitFor();
  const html = await anon.content();
  assert(!html.includes(HOSTILE_NAME), "the raw tag is in the page source");
  assert(html.includes("&lt;script&gt;alert(1)&lt;/script&gt;"), "escaped text");
  assert(dialogs === 0, "an alert ran");
  await audit(anon, "profile-hostile");
});

await check("without an admin session /admin redirects to sign-in, never the controls", async () => {
  for (const path of ["/admin", "/admin/withdrawals", "/admin/reviews", "/admin/agents"]) {
    await anon.goto(BASE + path);
    assert(anon.url().startsWith(BASE + "/dashboard/sign-in"), `${path} went to ${anon.url()}`);
    assert(await anon.getByRole("button", { name: /approve|suspend|reject/i }).count() === 0, "controls shown");
  }
});

const agentContext = await newContext();
const agent = await agentContext.newPage();

await check("sign in with a challenge signature", async () => {
  await agent.goto(BASE + "/dashboard");
  assert(agent.url().startsWith(BASE + "/dashboard/sign-in"), `dashboard without session: ${agent.url()}`);
  await audit(agent, "sign-in");
  await agent.getByLabel("Agent handle").fill(AGENT);
  await agent.getByRole("button", { name: "Get a challenge" }).click();
  const command = await agent.locator("#command").textContent();
  const challenge = /'([^']+)'/.exec(command)[1];
  assert(challenge.startsWith("nervix-auth-v1:"), `challenge ${challenge}`);
  await audit(agent, "sign-in-challenge");
  const signature = execFileSync(env("NERVIX_BIN"),
    ["agent", "sign-challenge", challenge, "--key", env("AGENT_KEY")]).toString().trim();
  await agent.getByLabel("Signature (base64)").fill(signature);
  await agent.getByRole("button", { name: "Sign in" }).click();
  await agent.waitForURL(BASE + "/dashboard");
  assert((await agent.locator("h1").textContent()).includes(AGENT), "the dashboard is the agent's");
  const cookie = (await agentContext.cookies()).find((c) => c.name === "nervix_session");
  assert(cookie && cookie.httpOnly && cookie.sameSite === "Strict", `cookie ${JSON.stringify(cookie && { ...cookie, value: "…" })}`);
  const token = cookie.value.slice(2);
  assert(!(await agent.content()).includes(token), "the token is in the page source");
  assert(!agent.url().includes(token), "the token is in the URL");
  assert(await agent.evaluate(() => document.cookie) === "", "the session cookie is readable by script");
});

await check("forms refuse a missing or wrong CSRF token", async () => {
  assert(await postForm(agent, "/dashboard/notifications/read", {}) === 403, "no token accepted");
  await agent.goto(BASE + "/dashboard");
  assert(await postForm(agent, "/dashboard/withdrawals", { csrf: "forged", amount: "1.00", destination: "x" }) === 403,
    "a forged token accepted");
  await agent.goto(BASE + "/dashboard");
  assert(await postForm(agent, "/dashboard/sign-out", {}) === 403, "sign-out without a token");
  const fresh = await (await newContext()).newPage();
  await fresh.goto(BASE + "/dashboard/sign-in");
  assert(await postForm(fresh, "/dashboard/sign-in/token", { token: env("ADMIN_TOKEN") }) === 403,
    "the sign-in form without its token");
  await agent.goto(BASE + "/dashboard");
  assert(agent.url() === BASE + "/dashboard", "still signed in");
});

const adminContext = await newContext();
const admin = await adminContext.newPage();

await check("admin signs in with a token", async () => {
  await admin.goto(BASE + "/dashboard/sign-in");
  await admin.getByLabel("Token", { exact: true }).fill(env("ADMIN_TOKEN"));
  await admin.getByRole("button", { name: "Sign in with the token" }).click();
  await admin.waitForURL(BASE + "/admin");
  assert(!(await admin.content()).includes(env("ADMIN_TOKEN")), "token in page source");
  await visit(admin, "/admin", "admin-system");
  assert(await postForm(admin, "/admin/bonus-pool", { amount: "5.00" }) === 403, "admin form without a token");
});

await check("dashboard renders and passes axe", async () => {
  await visit(agent, "/dashboard", "dashboard-before");
  await agent.locator("#live-status", { hasText: "connected" }).waitFor();
});

await check("admin approves a spot-checked submission; the notification and earning appear live", async () => {
  await agent.goto(BASE + "/dashboard");
  await agent.locator("#live-status", { hasText: "connected" }).waitFor();
  await agent.evaluate(() => { window.__noReload = "still here"; });
  const before = await agent.locator("#balance").textContent();
  await visit(admin, "/admin/reviews", "admin-reviews");
  const held = admin.locator("article", { hasText: env("TASK_TITLE") });
  await held.getByLabel("Score (0–100)").fill("90");
  await held.getByLabel("Feedback").fill("Clear and complete.");
  await held.getByRole("button", { name: "Approve" }).click();
  await admin.getByText("Nothing is waiting for review.").waitFor();
  await agent.locator("#notification-list li.fresh").first().waitFor();
  const note = await agent.locator("#notification-list li.fresh").first().textContent();
  assert(/accept/i.test(note), `notification: ${note}`);
  await agent.waitForFunction((b) => document.getElementById("balance").textContent !== b, before);
  assert(await agent.evaluate(() => window.__noReload) === "still here", "the page reloaded");
  await audit(agent, "dashboard-live");
});

await check("the dashboard shows the earnings after the task completed", async () => {
  await agent.reload();
  const earned = await agent.locator("#earned").textContent();
  assert(earned !== "0.00", `total earned ${earned}`);
  assert(await agent.locator("figure.chart svg.bars rect.bar").count() > 0, "earnings chart bars");
  assert(await agent.getByText(/payout/).count() > 0, "payout in the ledger");
  await audit(agent, "dashboard-earned");
});

await check("message threads show the ciphertext as such", async () => {
  await visit(agent, "/dashboard/messages?with=" + env("BYSTANDER"), "messages");
  const item = agent.locator(".feed li", { hasText: "@" + env("BYSTANDER") });
  await item.getByText("encrypted", { exact: true }).waitFor();
  const cipher = await item.locator("code.cipher").textContent();
  assert(/^[A-Za-z0-9+/]+=*$/.test(cipher) && cipher.length > 20, `ciphertext ${cipher}`);
  assert(!(await agent.content()).includes("meet at noon"), "the plaintext is on the page");
});

await check("admin approves a withdrawal", async () => {
  await visit(admin, "/admin/withdrawals", "admin-withdrawals");
  const row = admin.locator("tr", { hasText: "@" + AGENT }).filter({ hasText: "pending" });
  await row.getByRole("button", { name: /Approve/ }).click();
  await admin.waitForURL(BASE + "/admin/withdrawals");
  await admin.locator("tr", { hasText: "@" + AGENT }).filter({ hasText: "paid" }).first().waitFor();
  await visit(admin, "/admin/audit?action=admin.withdrawal.approve", "admin-audit");
  assert(await admin.locator("tbody tr", { hasText: "admin.withdrawal.approve" }).count() === 1, "audited");
});

await check("the dashboard's forms: a withdrawal request and a settings change", async () => {
  await agent.goto(BASE + "/dashboard");
  await agent.getByLabel("Amount", { exact: true }).fill("1.00");
  await agent.getByLabel("Destination").fill("iban:from-the-page");
  await agent.getByRole("button", { name: "Request withdrawal" }).click();
  await agent.locator("tr", { hasText: "iban:from-the-page" }).getByText("pending").waitFor();
  await agent.getByLabel("Display name").fill("Web Worker Renamed");
  await agent.getByRole("button", { name: "Save settings" }).click();
  await agent.waitForURL(BASE + "/dashboard#settings");
  assert(await agent.getByLabel("Display name").inputValue() === "Web Worker Renamed", "name saved");
});

await check("the leaderboard and a profile with its reputation chart render", async () => {
  await visit(anon, "/leaderboard", "leaderboard");
  await anon.locator("tbody tr", { hasText: "@" + AGENT }).first().waitFor();
  // The reputation worker records the score after the review: wait for its first point.
  const deadline = Date.now() + 20000;
  for (;;) {
    await anon.goto(BASE + "/agents/" + AGENT);
    if (await anon.locator("figure.chart svg polyline, figure.chart svg circle.dot").count() > 0) { break; }
    assert(Date.now() < deadline, "no reputation point on the chart");
    await anon.waitForTimeout(500);
  }
  assert(await anon.locator("figure.chart details table tbody tr").count() > 0, "chart's data table");
  assert(await anon.locator("figure.chart svg title").count() > 0, "chart's text alternative");
  await visit(anon, "/agents/" + AGENT, "profile");
});

await check("admin pages: agents (suspend, reinstate), tasks, workflow DAG, announcements, bonus pool", async () => {
  await visit(admin, "/admin/agents?q=" + env("BYSTANDER"), "admin-agents");
  await admin.getByRole("button", { name: "Suspend " + env("BYSTANDER") }).click();
  await admin.locator("tr", { hasText: env("BYSTANDER") }).getByText("suspended").waitFor();
  await admin.getByRole("button", { name: "Reinstate " + env("BYSTANDER") }).click();
  await admin.getByRole("button", { name: "Suspend " + env("BYSTANDER") }).waitFor();
  await visit(admin, "/admin/tasks", "admin-tasks");
  await visit(admin, "/admin/workflows/" + env("WORKFLOW_ID"), "admin-workflow");
  assert(await admin.locator("svg.dag g.node").count() === 2, "two tasks in the DAG");
  assert(await admin.locator("svg.dag line.edge").count() === 1, "one dependency");
  await agent.goto(BASE + "/dashboard");
  await agent.locator("#live-status", { hasText: "connected" }).waitFor();
  await visit(admin, "/admin/announcements", "admin-announcements");
  await admin.getByLabel("Title").fill("Maintenance tonight");
  await admin.getByLabel("Message").fill("The platform restarts at 22:00 UTC.");
  await admin.getByRole("button", { name: "Announce to every agent" }).click();
  await admin.getByText(/Announced to \d+ agents/).waitFor();
  await agent.locator("#notification-list li", { hasText: "Maintenance tonight" }).waitFor();
  await visit(admin, "/admin/bonus-pool", "admin-bonus-pool");
  await admin.getByLabel("Amount to move from the treasury").fill("25.00");
  await admin.getByRole("button", { name: "Fund the pool" }).click();
  await admin.locator("#pool", { hasText: "25.00" }).waitFor();
});

await check("a signed-in agent is no admin, and signing out ends the session", async () => {
  await agent.goto(BASE + "/admin");
  assert(agent.url().startsWith(BASE + "/dashboard/sign-in"), `agent at /admin: ${agent.url()}`);
  await agent.goto(BASE + "/dashboard");
  await agent.getByRole("button", { name: "Sign out" }).click();
  await agent.waitForURL(BASE + "/");
  await agent.goto(BASE + "/dashboard");
  assert(agent.url().startsWith(BASE + "/dashboard/sign-in"), "still signed in after signing out");
});

await browser.close();
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
