// The chat's backend: serves the page and the SDK, mints access tokens, and is the only
// party that creates rooms and grants access to them (all through the `twilio` package).

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { createReadStream, existsSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureCreated, grantStream, mintToken, readConfig, setupService, twilioClient } from "./lib/syncline.mjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const PUBLIC = join(here, "public");
const SDK = resolve(here, "../../clients/js/dist");
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png" };

// Identities end up in object names and REST paths, which cannot hold `/` (nor can
// twilio-node escape them), so names are kept to a plain set.
const NAME = /^[A-Za-z0-9_.-]{1,32}$/;
const ROOM_ID = /^[0-9a-f]{10}$/;

const names = {
  rooms: "chat-rooms", // backend-only: room id -> { name, invite, createdBy }
  user: (identity) => `chat-user-${identity}`, // one per user, readable by them: their rooms
  messages: (id) => `chat-${id}-messages`,
  members: (id) => `chat-${id}-members`,
  typing: (id) => `chat-${id}-typing`,
};

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * Starts the chat backend. Resolves to `{ url, port, close() }` once it listens.
 * Options: `port` (0: any free one), `host`, `config` (path of Syncline's admin.json),
 * `tokenTtl` (seconds), `debounceMs` (how long a closed tab stays in the roster),
 * `service` (the Sync service's unique name).
 */
export async function startChat({
  port = 3000,
  host = "127.0.0.1",
  config: configPath = resolve(here, "../../syncline-data/admin.json"),
  tokenTtl = 3600,
  debounceMs = 1500,
  service: serviceName = "syncline-chat",
  log = console,
} = {}) {
  const config = readConfig(configPath);
  const client = twilioClient(config);
  const service = await setupService(client, config, { uniqueName: serviceName, debounceMs });
  const sync = client.sync.v1.services(service.sid);
  await ensureCreated(() => sync.syncMaps.create({ uniqueName: names.rooms }));

  /** The identity a request's `Authorization: Bearer <token>` was minted for, if valid. */
  function identityOf(req) {
    const token = (req.headers.authorization ?? "").replace(/^Bearer /, "");
    const [head, body, sig] = token.split(".");
    if (!sig) throw new HttpError(401, "Log in first.");
    const want = createHmac("sha256", config.api_key_secret).update(`${head}.${body}`).digest();
    const got = Buffer.from(sig, "base64url");
    if (got.length !== want.length || !timingSafeEqual(got, want)) throw new HttpError(401, "Log in again.");
    const claims = JSON.parse(Buffer.from(body, "base64url").toString());
    // The same 60 s of slack Syncline allows, so a tab refreshing late still can.
    if (claims.exp + 60 < Date.now() / 1000) throw new HttpError(401, "Your session expired: log in again.");
    return claims.grants.identity;
  }

  /** Applies `change` to the user's room list, retrying when another request got in first. */
  async function updateUser(identity, change) {
    const doc = sync.documents(names.user(identity));
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await doc.fetch();
      try {
        return await doc.update({ data: change(current.data ?? { rooms: [] }), ifMatch: current.revision });
      } catch (e) {
        if (e.status !== 412) throw e;
      }
    }
    throw new Error(`could not update ${names.user(identity)}: too much contention`);
  }

  /** Lets `identity` read and write the room's messages, roster and typing stream. */
  async function grantRoom(id, identity) {
    const rights = { read: true, write: true, manage: false };
    await sync.syncLists(names.messages(id)).syncListPermissions(identity).update(rights);
    await sync.syncMaps(names.members(id)).syncMapPermissions(identity).update(rights);
    await grantStream(client, config, service.sid, names.typing(id), identity, rights);
  }

  async function addRoom(identity, room) {
    await updateUser(identity, (data) => ({
      rooms: [...data.rooms.filter((r) => r.id !== room.id), room],
    }));
  }

  const api = {
    async "POST /api/login"(req, body) {
      const identity = String(body.name ?? "").trim();
      if (!NAME.test(identity)) throw new HttpError(400, "A name is 1 to 32 letters, digits, '.', '_' or '-'.");
      const user = names.user(identity);
      await ensureCreated(() => sync.documents.create({ uniqueName: user, data: { rooms: [] } }));
      // Read only: the room list changes through this backend, never from the browser.
      await sync.documents(user).documentPermissions(identity).update({ read: true, write: false, manage: false });
      return { identity, token: mintToken(config, service.sid, identity, tokenTtl), syncUrl: config.http_url, userDocument: user };
    },

    async "POST /api/token"(req) {
      return { token: mintToken(config, service.sid, identityOf(req), tokenTtl) };
    },

    async "POST /api/rooms"(req, body) {
      const identity = identityOf(req);
      const name = String(body.name ?? "").trim().slice(0, 60);
      if (!name) throw new HttpError(400, "Give the room a name.");
      const id = randomBytes(5).toString("hex");
      const invite = randomBytes(16).toString("hex");
      await sync.syncLists.create({ uniqueName: names.messages(id) });
      await sync.syncMaps.create({ uniqueName: names.members(id) });
      await sync.syncStreams.create({ uniqueName: names.typing(id) });
      await sync.syncMaps(names.rooms).syncMapItems.create({ key: id, data: { name, invite, createdBy: identity } });
      await grantRoom(id, identity);
      const room = { id, name, invite };
      await addRoom(identity, room);
      return room;
    },

    async "POST /api/join"(req, body) {
      const identity = identityOf(req);
      const id = String(body.room ?? "");
      const invite = Buffer.from(String(body.invite ?? ""));
      const refused = new HttpError(403, "This invite link is not valid.");
      if (!ROOM_ID.test(id)) throw refused;
      let item;
      try {
        item = await sync.syncMaps(names.rooms).syncMapItems(id).fetch();
      } catch (e) {
        if (e.status === 404) throw refused;
        throw e;
      }
      const expected = Buffer.from(item.data.invite);
      if (invite.length !== expected.length || !timingSafeEqual(invite, expected)) throw refused;
      await grantRoom(id, identity);
      const room = { id, name: item.data.name, invite: item.data.invite };
      await addRoom(identity, room);
      return room;
    },
  };

  function serveFile(res, root, path) {
    const file = resolve(root, "." + path);
    if (!file.startsWith(root + sep) || !existsSync(file) || !statSync(file).isFile()) {
      return res.writeHead(404, { "content-type": "text/plain" }).end("not found");
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-cache" });
    createReadStream(file).pipe(res);
  }

  async function handle(req, res) {
    const path = new URL(req.url, "http://x").pathname;
    const route = api[`${req.method} ${path}`];
    if (route) {
      let body = "";
      for await (const chunk of req) {
        body += chunk;
        if (body.length > 10_000) throw new HttpError(413, "Too large.");
      }
      let parsed;
      try {
        parsed = body ? JSON.parse(body) : {};
      } catch {
        throw new HttpError(400, "Send JSON.");
      }
      const answer = await route(req, parsed);
      return res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
    }
    if (req.method !== "GET") throw new HttpError(405, "Method not allowed.");
    if (path.startsWith("/sdk/")) return serveFile(res, SDK, path.slice("/sdk".length));
    return serveFile(res, PUBLIC, path === "/" ? "/index.html" : path);
  }

  const http = createServer((req, res) => {
    handle(req, res).catch((e) => {
      const status = e instanceof HttpError ? e.status : 502;
      if (status >= 500) log.error(`${req.method} ${req.url}:`, e);
      const message = status >= 500 ? "The sync server did not answer as expected." : e.message;
      if (!res.headersSent) res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: message }));
    });
  });
  await new Promise((ok, fail) => {
    http.once("error", fail);
    http.listen(port, host, ok);
  });
  const bound = http.address().port;
  return {
    port: bound,
    url: `http://${host.includes(":") ? `[${host}]` : host}:${bound}`,
    serviceSid: service.sid,
    close: () =>
      new Promise((ok) => {
        http.close(() => ok());
        http.closeAllConnections();
        // twilio's keep-alive sockets to Syncline would otherwise outlive the backend.
        client.httpClient.axios.defaults.httpsAgent.destroy();
      }),
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const chat = await startChat({
    port: Number(process.env.PORT ?? 3000),
    host: process.env.HOST ?? "127.0.0.1",
    config: process.env.SYNCLINE_CONFIG ? resolve(process.env.SYNCLINE_CONFIG) : undefined,
  });
  console.log(`chat: ${chat.url} (Sync service ${chat.serviceSid})`);
  const stop = () => chat.close().then(() => process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
