// The Syncline-specific part of the backend: the `twilio` package pointed at a Syncline
// server, its chat service set up, and the one grant Twilio's REST API has no resource for
// (a stream's, which Syncline's REST API adds).

import { readFileSync } from "node:fs";
import twilio from "twilio";

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
 * and maps only; Syncline enforces its ACL on streams too, so its REST API adds
 * `Streams/{Stream}/Permissions/{Identity}`. twilio-node has no resource for it: the
 * same client's generic `request` posts the same form as for a list.
 */
export async function grantStream(client, config, serviceSid, stream, identity, rights) {
  const uri = `${config.http_url}/v1/Services/${serviceSid}/Streams/${encodeURIComponent(stream)}/Permissions/${encodeURIComponent(identity)}`;
  const data = { Read: String(rights.read), Write: String(rights.write), Manage: String(rights.manage) };
  const r = await client.request({ method: "post", uri, data });
  if (r.statusCode >= 300) throw new Error(`granting ${stream}: ${r.statusCode} ${JSON.stringify(r.body)}`);
  return r.body;
}
