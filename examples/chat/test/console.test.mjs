// The web console (/admin on the Syncline server) in headless Chromium: an operator logs
// in with the API key, browses the chat's room objects, and sees one change live; a
// stranger's page gets nothing from the console's API.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { startChat } from "../server.mjs";
import { SCREENSHOTS, launchChromium } from "./browser.mjs";
import { SynclineServer } from "./syncline-server.mjs";


let server, chat, browser;

before(async () => {
  server = await new SynclineServer().start();
  chat = await startChat({ port: 0, config: server.adminPath, debounceMs: 1000, log: { error() {} } });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await chat?.close();
  await server?.stop();
  server?.remove();
});

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
  await page.locator("#messages li", { hasText: text }).waitFor();
}

/** A chat user who creates a room and says something in it. */
async function chatter(name, text) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  await page.goto(chat.url);
  await page.fill("#login-name", name);
  await page.click("#login button");
  await page.locator("body[data-connection=connected]").waitFor();
  await page.fill("#new-room-name", "ops");
  await page.click("#new-room button");
  await page.locator("#room-name", { hasText: "ops" }).waitFor();
  await say(page, text);
  return { context, page };
}

test("the console logs in with the API key and shows a chat room's messages live", async () => {
  const admin = server.admin;
  const alice = await chatter("alice", "first");
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 }, ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${admin.http_url}/admin`);

  await page.fill("#sid", admin.api_key_sid);
  await page.fill("#secret", "wrong");
  await page.click("#login-form button");
  await page.waitForFunction(() => document.getElementById("login-error").textContent.length > 0);

  await page.fill("#secret", admin.api_key_secret);
  await page.click("#login-form button");
  await page.waitForSelector("#services tr[data-sid]");
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "syncline_console");
  assert.ok(session, "a session cookie");
  assert.equal(session.httpOnly, true);
  assert.equal(session.secure, true);
  assert.equal(session.sameSite, "Strict");

  // The chat's service, with its ACL on, then its message lists.
  const chatRow = page.locator("#services tr[data-sid]", { hasText: "chat" }).first();
  await chatRow.click();
  assert.equal(await chatRow.locator("input[type=checkbox]").isChecked(), true, "the chat's service has its ACL on");
  await page.click("#kinds button:has-text('Lists')");
  await page.locator("#objects tr[data-sid]").first().click();
  await page.waitForFunction(() => document.getElementById("object").textContent.includes("first"));
  await page.waitForFunction(() => document.getElementById("live").textContent.includes("live"));
  await page.waitForSelector("#permissions td:has-text('alice')");

  // A message sent in the chat appears in the console without a reload.
  await say(alice.page, "seen by the console");
  await page.waitForFunction(() => document.getElementById("object").textContent.includes("seen by the console"));
  await page.screenshot({ path: `${SCREENSHOTS}console.png` });
  assert.deepEqual(errors, []);
  await alice.context.close();
  await context.close();
});

test("a page without the console's cookie gets 401 from every console API path", async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(`${server.admin.http_url}/admin`);
  const statuses = await page.evaluate(async () => {
    const out = [];
    for (const path of ["keys", "metrics", "v1/Services", "made/up"]) {
      out.push((await fetch(`/admin/api/${path}`, { headers: { "X-Syncline-Console": "1" } })).status);
    }
    return out;
  });
  assert.deepEqual(statuses, [401, 401, 401, 401]);
  await context.close();
});
