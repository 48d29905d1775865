// The Syncline-specific part of the backend: the `twilio` package pointed at a Syncline
// server, its chat service set up, and the one grant Twilio's REST API has no resource for.

import { readFileSync } from "node:fs";
import twilio from "twilio";
import WebSocket from "ws";

/** Reads the server's admin.json: where it listens, its CA, the API key the backend uses. */
export function readConfig(path) {
  const admin = JSON.parse(readFileSync(path, "utf8"));
  for (const field of ["http_url", "ca_file", "api_key_sid", "api_key_secret", "account_sid"]) {
    if (!admin[field]) throw new Error(`${path} has no "${field}": is it a Syncline admin.json?`);
  }
  return { ...admin, ca: readFileSync(admin.ca_file) };
}

/**
 * A twilio REST client talking to Syncline instead of sync.twilio.com. These two lines
 * are the whole port: the Sync domain's base URL, and an HTTP client trusting Syncline's
 * self-signed CA (with a real certificate, `serve --cert/--key`, only the URL changes).
 */
export function twilioClient(config) {
  const client = twilio(config.api_key_sid, config.api_key_secret, {
    accountSid: config.account_sid,
    httpClient: new twilio.RequestClient({ ca: config.ca, timeout: 10_000 }),
  });
  client.sync.baseUrl = config.http_url;
  return client;
}

/** An access token for `identity` in `serviceSid`, exactly as for Twilio Sync. */
export function mintToken(config, serviceSid, identity, ttl) {
  const { AccessToken } = twilio.jwt;
  const token = new AccessToken(config.account_sid, config.api_key_sid, config.api_key_secret, { identity, ttl });
  token.addGrant(new AccessToken.SyncGrant({ serviceSid }));
  return token.toJwt();
}

const isStatus = (e, status) => e && (e.status === status || e.statusCode === status);

/** Runs a create, taking "that name is taken" (409, Twilio's 54301) as success. */
export async function ensureCreated(create) {
  try {
    return await create();
  } catch (e) {
    if (isStatus(e, 409)) return null;
    throw e;
  }
}

/**
 * Finds or creates the chat's service and (re)applies its flags. Syncline's own
 * `UniqueName` and `TokenCreate` are not parameters twilio-node knows, so those go
 * through the client's generic `request` (same credentials, same HTTP client).
 */
export async function setupService(client, config, { uniqueName, debounceMs }) {
  const base = `${config.http_url}/v1/Services`;
  const raw = async (uri, data) => {
    const r = await client.request({ method: "post", uri, data });
    if (r.statusCode >= 300) throw new Error(`POST ${uri}: ${r.statusCode} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  let service;
  try {
    service = await client.sync.v1.services(uniqueName).fetch();
  } catch (e) {
    if (!isStatus(e, 404)) throw e;
    await raw(base, { UniqueName: uniqueName, FriendlyName: "Syncline chat example" });
    service = await client.sync.v1.services(uniqueName).fetch();
  }
  service = await client.sync.v1.services(service.sid).update({
    aclEnabled: true,
    reachabilityDebouncingEnabled: true,
    reachabilityDebouncingWindow: debounceMs,
  });
  const flags = await raw(`${base}/${service.sid}`, { TokenCreate: "none" });
  if (flags.token_create !== "none") throw new Error(`the service kept token_create=${flags.token_create}`);
  return service;
}

/**
 * Grants `rights` on a stream. Twilio's REST API has Permissions for documents, lists
 * and maps only, and so has Syncline's; Syncline enforces the ACL on streams too, so the
 * backend grants them over Syncline's WebSocket protocol as an API key, one short
 * connection per grant.
 */
export function grantStream(config, serviceSid, stream, identity, rights) {
  const url = config.http_url.replace(/^https/, "wss") + "/v1/ws";
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, "syncline.v1", { ca: config.ca });
    const fail = (e) => {
      clearTimeout(timer);
      ws.terminate();
      reject(e);
    };
    const timer = setTimeout(() => fail(new Error(`granting ${stream}: no answer in 10 s`)), 10_000);
    ws.on("error", fail);
    ws.on("open", () => {
      const key = { sid: config.api_key_sid, secret: config.api_key_secret };
      ws.send(JSON.stringify({ id: 1, request: { Hello: { credential: { ApiKey: key }, service: serviceSid } } }));
    });
    ws.on("message", (data) => {
      const m = JSON.parse(String(data));
      if (m.id !== 1 && m.id !== 2) return;
      if (m.result && "Err" in m.result) return fail(new Error(`granting ${stream}: ${m.result.Err.message}`));
      if (m.id === 1) {
        ws.send(JSON.stringify({ id: 2, request: { PermissionGrant: { object: stream, identity, rights } } }));
      } else {
        clearTimeout(timer);
        ws.close();
        resolve(m.result.Ok);
      }
    });
  });
}
