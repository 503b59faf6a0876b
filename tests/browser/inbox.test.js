// Real-browser test of the approver inbox (issue 3), driven by tests/browser/run.sh.
//
// Headless Debian chromium via playwright-core. Walks the approver's path end to end against a
// running gateway: a bad token is refused with a message; sign in; a gated request (202 from the
// proxy) appears in the pending list LIVE (no reload); approve it with the keyboard; it leaves the
// pending list and shows up in history; the retry through the proxy is forwarded (Approval-Id);
// the consumption shows up live; after a gateway restart the event stream reconnects by itself;
// sign-out forgets the token. Then (issue 16) the browser gets the site's session cookie: the
// inbox opens signed in by that session with no token pasted, shows what is pending, and an
// approve click is recorded as the session's user; signing out shows the token form. Saves a
// screenshot for CI.
//
// Env: ADMIN_URL, PROXY_URL, APPROVER_TOKEN, APPROVER_NAME, GATED_TOKEN, SESSION_COOKIE,
// SESSION_USER, SCREENSHOT, CHROMIUM, RESTART_GATEWAY.
"use strict";

const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { execFile } = require("node:child_process");
const { chromium } = require("playwright-core");

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`missing env ${name}`);
  return v;
};
const ADMIN_URL = env("ADMIN_URL");
const PROXY_URL = env("PROXY_URL");
const APPROVER_TOKEN = env("APPROVER_TOKEN");
const APPROVER_NAME = env("APPROVER_NAME");
const GATED_TOKEN = env("GATED_TOKEN");
const SESSION_COOKIE = env("SESSION_COOKIE"); // the value of `session` the control plane knows
const SESSION_USER = env("SESSION_USER");
const SCREENSHOT = env("SCREENSHOT", "target/browser/inbox.png");
const CHROMIUM = env("CHROMIUM", "/usr/bin/chromium");
const RESTART_GATEWAY = env("RESTART_GATEWAY"); // a script that restarts the gateway, then waits
const STEP_MS = 15000;
const TOTAL_MS = 150000;

// Chromium's own background traffic is refused on CI machines; these flags keep it quiet.
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
  "--no-proxy-server",
];

function step(name) {
  console.log(`[inbox] ${name}`);
}

async function gated(method, urlPath, token) {
  const resp = await fetch(PROXY_URL + urlPath, {
    method,
    headers: { Authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(STEP_MS),
  });
  const text = await resp.text();
  return { status: resp.status, headers: resp.headers, text };
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "inbox-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1100, height: 900 },
    timeout: STEP_MS,
  });
  const problems = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(STEP_MS);
    // Any script error or CSP violation fails the test.
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      // Expected: the bad-token 401, and the event stream failing while the gateway restarts.
      const expected = /status of 401/.test(m.text())
        || (/net::ERR_/.test(m.text()) && m.location().url.endsWith("/v1/events"));
      if (m.type() === "error" && !expected) {
        problems.push(`console: ${m.text()} (${m.location().url})`);
      }
    });
    await run(page);
    await bySession(context, page);
    assert.deepEqual(problems, [], "no script errors or CSP violations");
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

async function run(page) {
  step("open the inbox");
  const resp = await page.goto(ADMIN_URL + "/");
  assert.equal(resp.status(), 200);
  const headers = resp.headers();
  assert.match(headers["content-security-policy"] || "", /script-src 'self'/);
  assert.equal(headers["x-content-type-options"], "nosniff");
  assert.equal(headers["cache-control"], "no-store");
  await page.getByRole("heading", { name: "Sign in" }).waitFor();

  step("a bad token is refused with a clear message");
  await page.getByLabel("Approver token (JWT)").fill("not-a-jwt");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "rejected this token" }).waitFor();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();

  step("sign in with the approver token");
  await page.getByLabel("Approver token (JWT)").fill(APPROVER_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Signed in as").waitFor();
  assert.equal(await page.locator("#whoami").textContent(), APPROVER_NAME);
  await waitText(page.locator("#live"), "Live");
  await page.getByText("Nothing is waiting for a decision.").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 1, "token kept in sessionStorage");
  assert.equal(await page.evaluate(() => localStorage.length), 0, "nothing in localStorage");
  // A marker that a reload would wipe: proves the list updates live.
  await page.evaluate(() => { window.__noReload = true; });

  step("a gated request is held (202) and appears live");
  const first = await gated("DELETE", "/workspaces/ws-browser-1", GATED_TOKEN);
  assert.equal(first.status, 202, `gated DELETE should be held: ${first.text}`);
  const held = JSON.parse(first.text);
  assert.equal(held.status, "pending_approval");
  const card = page.getByRole("article", { name: "delete_workspace · ws-browser-1" });
  await card.waitFor();
  await waitText(page.locator("#pending-count"), "1");
  const cardText = await card.textContent();
  for (const want of ["delete workspace ws-browser-1", "DELETE /workspaces/ws-browser-1",
    "platform-agent", "0 of 1 approval", '"workspace_id": "ws-browser-1"', held.approval_id]) {
    assert.ok(cardText.includes(want), `card shows ${want}: ${cardText}`);
  }
  assert.match(cardText, /just now|min ago/);
  await waitText(page.locator("#announcer"), "New approval requested");

  step("a second gated request stays pending (for the screenshot)");
  const second = await gated("DELETE", "/workspaces/ws-browser-2/secrets/API_KEY", GATED_TOKEN);
  assert.equal(second.status, 202, second.text);
  await page.getByRole("article", { name: "secret_delete · ws-browser-2" }).waitFor();
  await waitText(page.locator("#pending-count"), "2");

  step("approve the first one with the keyboard");
  const comment = card.getByLabel("Comment (optional)");
  await comment.fill("looks right <b>&amp;</b>");
  await comment.press("Enter"); // Enter in the comment must not cast a vote
  await comment.press("Tab");
  const approve = card.getByRole("button", { name: "Approve delete_workspace on ws-browser-1" });
  assert.ok(await approve.evaluate((b) => b === document.activeElement), "Tab reaches Approve");
  await page.keyboard.press("Enter");
  await card.waitFor({ state: "detached" });
  await waitText(page.locator("#pending-count"), "1");
  const focused = await page.evaluate(() => document.activeElement.id);
  assert.match(focused, /^a-.*-comment$/, "focus moves to the next pending card's comment field");

  step("it shows in history as approved by the approver");
  const row = page.locator("#history-body tr").filter({ hasText: "ws-browser-1" });
  await row.waitFor();
  const rowText = await row.textContent();
  assert.ok(rowText.includes("approved"), rowText);
  assert.ok(rowText.includes(`${APPROVER_NAME} (approve)`), rowText);
  assert.ok(await page.evaluate(() => window.__noReload === true), "no page reload happened");

  step("the retry through the proxy is forwarded");
  const retry = await gated("DELETE", "/workspaces/ws-browser-1", GATED_TOKEN);
  assert.equal(retry.status, 200, `retry should be forwarded: ${retry.text}`);
  assert.equal(retry.headers.get("approval-id"), held.approval_id);
  assert.match(retry.text, /"method":\s*"DELETE"/);
  await waitText(row.locator(".status"), "consumed");
  // The upstream's answer is no event: the page looks it up by itself, still without a reload.
  await waitText(row.locator(".status"), "consumed · upstream 200");
  assert.ok(await page.evaluate(() => window.__noReload === true), "no page reload happened");

  step("after a gateway restart the event stream reconnects by itself");
  // The gateway restarts (same ports, same store): the stream drops, the page reconnects.
  const restarted = new Promise((resolve, reject) => {
    execFile(RESTART_GATEWAY, { timeout: 40000 }, (err) => (err ? reject(err) : resolve()));
  });
  await waitText(page.locator("#live"), "Reconnecting");
  await restarted;
  await waitText(page.locator("#live"), "Live");
  const third = await gated("DELETE", "/workspaces/ws-browser-3", GATED_TOKEN);
  assert.equal(third.status, 202, third.text);
  await page.getByRole("article", { name: "delete_workspace · ws-browser-3" }).waitFor();
  await waitText(page.locator("#pending-count"), "2");
  assert.ok(await page.evaluate(() => window.__noReload === true), "still no page reload");

  step(`screenshot -> ${SCREENSHOT}`);
  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  step("a backlog of pending approvals spans pages and does not crowd decided ones out");
  // More pending approvals than one page of the inbox's list (100): all are shown, and history
  // still has the decided ones.
  const backlog = 120;
  for (let i = 0; i < backlog; i += 20) {
    const batch = [];
    for (let j = i; j < Math.min(i + 20, backlog); j++) {
      batch.push(gated("DELETE", `/workspaces/ws-backlog-${j}`, GATED_TOKEN));
    }
    for (const r of await Promise.all(batch)) assert.equal(r.status, 202, r.text);
  }
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Approver token (JWT)").fill(APPROVER_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await waitText(page.locator("#live"), "Live");
  await waitText(page.locator("#pending-count"), String(backlog + 2));
  await waitText(page.locator("#history-body tr").filter({ hasText: "ws-browser-1" }).locator(".status"),
    "consumed · upstream 200");

  step("sign out forgets the token");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  assert.equal(await page.locator("#pending-list li").count(), 0);
}

// The inbox signed in by the site's session: no token pasted, cookies only (issue 16).
async function bySession(context, page) {
  step("with the site's session cookie, the inbox signs in by itself");
  await context.addCookies([{ name: "session", value: SESSION_COOKIE, url: ADMIN_URL }]);
  const held = await gated("DELETE", "/workspaces/ws-session-1", GATED_TOKEN);
  assert.equal(held.status, 202, held.text);
  await page.goto(ADMIN_URL + "/");
  await waitText(page.locator("#signed-as"), "Signed in by your session");
  await waitText(page.locator("#live"), "Live");
  assert.ok(await page.locator("#signin").isHidden(), "no token form");
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "no token stored");
  const card = page.getByRole("article", { name: "delete_workspace · ws-session-1" });
  await card.waitFor();

  step("an approve click by session is recorded as the session's user");
  await card.getByRole("button", { name: "Approve delete_workspace on ws-session-1" }).click();
  await card.waitFor({ state: "detached" });
  const row = page.locator("#history-body tr").filter({ hasText: "ws-session-1" });
  await waitText(row, `${SESSION_USER} (approve)`);
  const retry = await gated("DELETE", "/workspaces/ws-session-1", GATED_TOKEN);
  assert.equal(retry.status, 200, `retry should be forwarded: ${retry.text}`);

  step("the session's live stream shows a new request");
  const next = await gated("DELETE", "/workspaces/ws-session-2", GATED_TOKEN);
  assert.equal(next.status, 202, next.text);
  await page.getByRole("article", { name: "delete_workspace · ws-session-2" }).waitFor();

  step("signing out of the session shows the token form");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByRole("alert").filter({ hasText: "Stopped using your session" }).waitFor();
  assert.equal(await page.locator("#pending-list li").count(), 0);

  step("a pasted token still works with the session cookie present (and wins)");
  await page.getByLabel("Approver token (JWT)").fill(APPROVER_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await waitText(page.locator("#whoami"), APPROVER_NAME);
  await waitText(page.locator("#live"), "Live");
  await page.getByRole("article", { name: "delete_workspace · ws-session-2" }).waitFor();
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
}

async function waitText(locator, text) {
  await locator.filter({ hasText: text }).first()
    .waitFor({ timeout: STEP_MS })
    .catch(async (e) => {
      const got = await locator.first().textContent().catch(() => "?");
      throw new Error(`waiting for "${text}", have "${got}": ${e.message}`);
    });
}

const watchdog = setTimeout(() => {
  console.error(`[inbox] FAIL: timed out after ${TOTAL_MS / 1000}s`);
  process.exit(1);
}, TOTAL_MS);

main().then(
  () => {
    clearTimeout(watchdog);
    console.log("[inbox] PASS");
  },
  (err) => {
    clearTimeout(watchdog);
    console.error(`[inbox] FAIL: ${err.stack || err}`);
    process.exit(1);
  },
);
