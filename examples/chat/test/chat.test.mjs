// The chat end to end: a real Syncline server, the chat backend, and users in headless
// Chromium windows. The tests run in order and share one room, as people would.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { startChat } from "../server.mjs";
import { SCREENSHOTS, launchChromium } from "./browser.mjs";
import { SynclineServer, waitFor } from "./syncline-server.mjs";

const DEBOUNCE_MS = 1000;
const VIEWPORT = { width: 1000, height: 700 };
const WAIT = { timeout: 10_000 };

let server, chat, browser;
const people = {}; // name -> { context, page }
let room; // { id, invite link }

before(async () => {
  server = await new SynclineServer().start();
  chat = await startChat({ port: 0, config: server.adminPath, debounceMs: DEBOUNCE_MS, log: { error() {} } });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await chat?.close();
  await server?.stop();
  server?.remove();
});

/** A new window for `name`, logged in, at `path` (the invite link, for instance). */
async function open(name, path = "/") {
  const context = people[name]?.context ?? (await browser.newContext({ viewport: VIEWPORT, ignoreHTTPSErrors: true }));
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.on("pageerror", (e) => console.error(`[${name}] page error:`, e));
  await page.goto(new URL(path, chat.url).href);
  await page.fill("#login-name", name);
  await page.click("#login button");
  await page.locator("body[data-connection=connected]").waitFor(WAIT);
  people[name] = { context, page };
  return page;
}

const message = (page, text) => page.locator("#messages li", { hasText: text });
const member = (page, name) => page.locator(`#roster li[data-member="${name}"]`);

async function send(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
  await message(page, text).waitFor(WAIT);
}

test("a user logs in, creates a room and gets an invite link for it", async () => {
  const alice = await open("alice");
  await alice.fill("#new-room-name", "Lobby");
  await alice.click("#new-room button");
  await alice.locator("#room-name", { hasText: "Lobby" }).waitFor(WAIT);
  await member(alice, "alice").waitFor(WAIT);
  const link = await alice.inputValue("#invite-link");
  const url = new URL(link);
  room = { id: url.searchParams.get("join"), link: url.pathname + url.search };
  assert.match(room.id, /^[0-9a-f]{10}$/);
  assert.match(url.searchParams.get("invite"), /^[0-9a-f]{32}$/);
  await alice.locator("#rooms a", { hasText: "Lobby" }).waitFor(WAIT);
});

test("two users in two browsers chat, and each sees the other's messages and presence", async () => {
  const bob = await open("bob", room.link);
  const alice = people.alice.page;
  await bob.locator("#room-name", { hasText: "Lobby" }).waitFor(WAIT);
  await member(bob, "alice").waitFor(WAIT);
  await member(alice, "bob").waitFor(WAIT);

  await send(alice, "Hi Bob, welcome to the lobby");
  await message(bob, "Hi Bob, welcome to the lobby").waitFor(WAIT);
  await send(bob, "Thanks Alice! Sync is working");
  await message(alice, "Thanks Alice! Sync is working").waitFor(WAIT);

  // Authors come from the server's record of who pushed, and land on the right side.
  assert.equal(await message(alice, "Thanks Alice").locator(".author").textContent(), "bob");
  assert.equal(await message(bob, "Thanks Alice").getAttribute("class"), "mine");
  assert.deepEqual(
    await alice.locator("#messages .text").allTextContents(),
    await bob.locator("#messages .text").allTextContents(),
  );
  await send(alice, "Start typing and I will see it");
  await bob.screenshot({ path: `${SCREENSHOTS}chat-bob.png` });
});

test("the other side sees 'bob is typing' while bob types, and it goes away after about 2 s", async () => {
  const { page: alice } = people.alice;
  const { page: bob } = people.bob;
  await bob.click("#text");
  await bob.keyboard.type("Let me think", { delay: 30 });
  await alice.locator("#typing", { hasText: "bob is typing" }).waitFor(WAIT);
  await alice.screenshot({ path: `${SCREENSHOTS}chat-alice-typing.png` });
  assert.equal(await bob.textContent("#typing"), "", "nobody sees themselves typing");
  await waitFor(async () => (await alice.textContent("#typing")) === "", "the typing indicator to clear", 5_000);
  await bob.fill("#text", "");
});

test("a stranger without an invite sees no rooms, and opening the room tells them they have no access", async () => {
  const carol = await open("carol", `/#room=${room.id}`);
  await carol.locator("#notice", { hasText: "no access" }).waitFor(WAIT);
  assert.equal(await carol.isVisible("#no-rooms"), true);
  assert.equal(await carol.locator("#rooms li").count(), 0);
  assert.equal(await carol.isVisible("#room"), false);
  assert.equal(await carol.locator("#messages li").count(), 0);
  await carol.screenshot({ path: `${SCREENSHOTS}chat-stranger.png` });

  // A guessed invite code is refused by the backend, and grants nothing.
  await carol.goto(new URL(`/?join=${room.id}&invite=${"0".repeat(32)}`, chat.url).href);
  await carol.locator("body[data-connection=connected]").waitFor(WAIT);
  await carol.locator("#notice", { hasText: "not valid" }).waitFor(WAIT);
  await carol.goto(new URL(`/#room=${room.id}`, chat.url).href);
  await carol.locator("#notice", { hasText: "no access" }).waitFor(WAIT);
  await member(people.alice.page, "carol").waitFor({ state: "detached", timeout: 1000 });
});

test("a stranger's own SyncClient can neither reach the room's objects nor create any", async () => {
  const { context } = people.carol;
  const page = await context.newPage();
  await page.goto(chat.url);
  // Whatever a user could type into the console: the SDK, a fresh token, any call.
  const outcome = await page.evaluate(async (id) => {
    const { SyncClient } = await import("/sdk/index.js");
    const login = await (await fetch("/api/login", { method: "POST", body: JSON.stringify({ name: "carol" }) })).json();
    const client = new SyncClient(login.token, { url: login.syncUrl, logLevel: "silent", requestTimeoutMs: 8000 });
    const code = (p) => p.then(() => "ok", (e) => e.code);
    try {
      return {
        list: await code(client.list(`chat-${id}-messages`)),
        map: await code(client.map({ id: `chat-${id}-members`, mode: "open_existing" })),
        stream: await code(client.stream(`chat-${id}-typing`)),
        create: await code(client.list("carol-private-room")),
        createDocument: await code(client.document({ id: "carol-notes", mode: "create_new" })),
      };
    } finally {
      await client.shutdown();
    }
  }, room.id);
  assert.deepEqual(outcome, { list: "Forbidden", map: "Forbidden", stream: "Forbidden", create: "Forbidden", createDocument: "Forbidden" });
  await page.close();
});

test("closing a tab removes its member from the others' roster within the debouncing window", async () => {
  const { page: alice } = people.alice;
  await member(alice, "bob").waitFor(WAIT);
  const closed = Date.now();
  await people.bob.page.close();
  await member(alice, "bob").waitFor({ state: "detached", timeout: DEBOUNCE_MS + 4000 });
  const gone = Date.now() - closed;
  assert.ok(gone >= DEBOUNCE_MS - 100, `bob left after ${gone} ms, before the ${DEBOUNCE_MS} ms window`);

  // Back in a new tab: the room is in bob's list now, no invite needed.
  const bob = await open("bob", `/#room=${room.id}`);
  await member(bob, "alice").waitFor(WAIT);
  await member(alice, "bob").waitFor(WAIT);
  await message(bob, "Sync is working").waitFor(WAIT);
});

test("the chat survives a restart of the Syncline server without reloading the page", async () => {
  const { page: alice } = people.alice;
  const { page: bob } = people.bob;
  const addresses = server.addresses();
  const notConnected = (page) => page.locator("body:not([data-connection=connected])").waitFor(WAIT);
  await server.stop();
  await Promise.all([notConnected(alice), notConnected(bob)]);
  await server.start(addresses);
  const reconnected = { timeout: 30_000 };
  await alice.locator("body[data-connection=connected]").waitFor(reconnected);
  await bob.locator("body[data-connection=connected]").waitFor(reconnected);

  await send(alice, "Still here after the restart?");
  await message(bob, "Still here after the restart?").waitFor(WAIT);
  await send(bob, "Yes, no reload needed");
  await message(alice, "Yes, no reload needed").waitFor(WAIT);
  await member(alice, "bob").waitFor(WAIT);
  await member(bob, "alice").waitFor(WAIT);
  await alice.screenshot({ path: `${SCREENSHOTS}chat-alice.png` });
});

test("a page fetches a fresh token before its token expires, and keeps chatting with it", async () => {
  // A second backend on the same service, minting 6 s tokens: the SDK asks at half-life.
  const shortLived = await startChat({ port: 0, config: server.adminPath, debounceMs: DEBOUNCE_MS, tokenTtl: 6, log: { error() {} } });
  const context = await browser.newContext({ viewport: VIEWPORT });
  try {
    const page = await context.newPage();
    await page.goto(new URL(`/#room=${room.id}`, shortLived.url).href);
    await page.fill("#login-name", "alice");
    await page.click("#login button");
    await page.locator("body[data-connection=connected]").waitFor(WAIT);
    const refreshed = await page.waitForResponse((r) => r.url().endsWith("/api/token"), WAIT);
    assert.equal(refreshed.status(), 200);
    await send(page, "Sent on a refreshed token");
    await message(people.bob.page, "Sent on a refreshed token").waitFor(WAIT);
    assert.equal(await page.getAttribute("body", "data-connection"), "connected");
  } finally {
    await context.close();
    await shortLived.close();
  }
});
