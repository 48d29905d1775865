"""Drives Syncline's REST API with Twilio's own Python helper library, as a backend
written against Twilio Sync would: only its HTTP client is pointed at Syncline (the host
rewritten, Syncline's CA trusted). Run by tests/tests/rest.rs, which sets the environment
and checks the QUIC side of what this script does. Prints one line per step; any failed
check raises, so the exit status tells."""

import json
import os
import sys

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

TWILIO_SYNC = "https://sync.twilio.com"
env = os.environ


class SynclineHttpClient(TwilioHttpClient):
    """Twilio's HTTP client, sending to Syncline instead of sync.twilio.com."""

    def __init__(self, base_url, ca_file, **kwargs):
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")
        self.session.verify = ca_file
        # Else REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would override the CA, and proxies apply.
        self.session.trust_env = False

    def request(self, method, url, *args, **kwargs):
        if url.startswith(TWILIO_SYNC):
            url = self.base_url + url[len(TWILIO_SYNC):]
        return super().request(method, url, *args, **kwargs)


client = Client(
    env["KEY_SID"],
    env["KEY_SECRET"],
    env["ACCOUNT_SID"],
    http_client=SynclineHttpClient(env["HTTP_URL"], env["CA_FILE"]),
    environment={},
)
sync = client.sync.v1


def step(name):
    print("ok", name, flush=True)


def refused(call, status, code):
    try:
        call()
    except TwilioRestException as e:
        assert (e.status, e.code) == (status, code), f"expected {status}/{code}, got {e.status}/{e.code}: {e.msg}"
        return e
    raise AssertionError(f"expected {status}/{code}, but the call succeeded")


# Services with flags.
svc = sync.services.create(
    friendly_name="py service",
    acl_enabled=True,
    reachability_debouncing_enabled=True,
    reachability_debouncing_window=3000,
    webhooks_from_rest_enabled=True,
)
assert svc.sid.startswith("IS") and svc.acl_enabled is True, svc
assert svc.reachability_debouncing_window == 3000 and svc.friendly_name == "py service"
assert svc.links["documents"].endswith(f"/v1/Services/{svc.sid}/Documents")
svc = sync.services(svc.sid).update(acl_enabled=False, friendly_name="renamed")
assert svc.acl_enabled is False and svc.friendly_name == "renamed"
assert sync.services(svc.sid).fetch().friendly_name == "renamed"
# An empty FriendlyName clears it (the patch has no other way to say "none").
svc = sync.services(svc.sid).update(friendly_name="")
assert svc.friendly_name is None, svc.friendly_name
assert sync.services(svc.sid).fetch().friendly_name is None
assert svc.sid in [s.sid for s in sync.services.list()]
assert sync.services(svc.sid).delete() is True
refused(lambda: sync.services(svc.sid).fetch(), 404, 54050)
step("services")

service = sync.services(env["SERVICE_SID"])

# Documents: create, conditional update, a stale If-Match refused, errors as Twilio's.
doc = service.documents.create(unique_name="py-doc", data={"a": 1}, ttl=3600)
assert (doc.unique_name, doc.revision, doc.data, doc.created_by) == ("py-doc", "0", {"a": 1}, "system"), doc
assert doc.date_expires is not None and doc.date_created.year >= 2026
doc = service.documents("py-doc").update(data={"a": 2}, if_match=doc.revision)
assert (doc.revision, doc.data) == ("1", {"a": 2})
refused(lambda: service.documents("py-doc").update(data={"a": 3}, if_match="0"), 412, 54103)
assert service.documents(doc.sid).fetch().data == {"a": 2}
refused(lambda: service.documents("nowhere").fetch(), 404, 54100)
refused(lambda: service.documents("nowhere").update(data={"x": 1}), 404, 54100)
refused(lambda: service.documents.create(unique_name="py-doc", data={}), 409, 54301)
refused(lambda: service.documents.create(unique_name="bad-json", data="{nope"), 400, 54008)
refused(lambda: service.documents.create(unique_name="too-big", data={"x": "y" * 17000}), 413, 54006)
refused(lambda: service.documents.create(unique_name="bad-ttl", data={}, ttl=40_000_000), 400, 54011)
quic = service.documents("from-quic").fetch()
assert quic.data == {"written": "over QUIC"}, quic.data
for n in range(5):
    service.documents.create(unique_name=f"page-{n}", data={"n": n})
names = [d.unique_name for d in service.documents.stream(page_size=2)]
assert all(f"page-{n}" in names for n in range(5)), names
assert len(names) == len(set(names)), "no document twice across pages"
watched = service.documents("py-watched")
watched.update(data={"step": 1})
watched.update(data={"step": 2})
# A TTL alone changes the expiry, not the revision (the test checks no event came).
ttl_only = watched.update(ttl=3600)
assert (ttl_only.revision, ttl_only.data) == ("2", {"step": 2}), ttl_only
assert ttl_only.date_expires is not None
assert service.documents("page-0").delete() is True
refused(lambda: service.documents("page-0").fetch(), 404, 54100)
step("documents")

# Lists: items in both orders, paging across pages, From/Bounds, conditional updates.
lst = service.sync_lists.create(unique_name="py-list")
assert lst.sid.startswith("ES") and lst.revision == "0"
for n in range(7):
    item = service.sync_lists("py-list").sync_list_items.create(data={"n": n})
    assert item.index == n, item.index
items = service.sync_lists("py-list").sync_list_items
asc = [i.index for i in items.stream(order="asc", page_size=3)]
assert asc == list(range(7)), asc
desc = [i.index for i in items.stream(order="desc", page_size=2)]
assert desc == list(reversed(range(7))), desc
after = [i.index for i in items.list(from_="4", bounds="exclusive")]
assert after == [5, 6], after
with_collection_ttl = items.create(data={"n": 7}, collection_ttl=3600)
assert service.sync_lists("py-list").fetch().date_expires is not None, "CollectionTtl applied"
assert items(with_collection_ttl.index).delete() is True
one = items(3).fetch()
assert (one.data, one.list_sid) == ({"n": 3}, lst.sid)
refused(lambda: items(3).update(data={"n": 30}, if_match="0"), 412, 54155)
updated = items(3).update(data={"n": 30}, if_match=one.revision)
assert updated.data == {"n": 30} and int(updated.revision) > int(one.revision)
assert items(3).delete() is True
refused(lambda: items(3).fetch(), 404, 54151)
refused(lambda: service.sync_lists("no-list").sync_list_items.create(data={}), 404, 54150)
# 7 pushes, the CollectionTtl push and its removal, one update, one removal.
assert service.sync_lists("py-list").fetch().revision == str(7 + 2 + 1 + 1)
step("lists")

# Maps.
mp = service.sync_maps.create(unique_name="py-map")
mitems = service.sync_maps("py-map").sync_map_items
for k in ["zoe", "ann", "bob"]:
    mitems.create(key=k, data={"who": k})
refused(lambda: mitems.create(key="ann", data={}), 409, 54208)
assert [i.key for i in mitems.list()] == ["ann", "bob", "zoe"]
assert [i.key for i in mitems.list(order="desc", page_size=1)] == ["zoe", "bob", "ann"]
bob = mitems("bob").update(data={"who": "bob", "online": True})
assert bob.data["online"] is True and bob.map_sid == mp.sid
refused(lambda: mitems("nobody").update(data={}), 404, 54201)
assert mitems("zoe").delete() is True
refused(lambda: mitems("zoe").fetch(), 404, 54201)
step("maps")

# Streams: a message published here reaches the QUIC subscriber of the test.
stream = service.sync_streams("py-chat").fetch()
assert stream.sid.startswith("TO") and stream.links["messages"].endswith("/Messages")
msg = service.sync_streams("py-chat").stream_messages.create(data={"hello": "quic"})
assert msg.sid.startswith("TZ") and msg.data == {"hello": "quic"}
refused(lambda: service.sync_streams("py-chat").stream_messages.create(data={"x": "y" * 5000}), 413, 54006)
step("streams")

# Permissions on all three kinds, in the ACL service the test set up; the test then
# checks them over QUIC with alice's token.
acl = sync.services(env["ACL_SERVICE_SID"])
acl.documents.create(unique_name="secret", data={"s": 1})
acl.sync_lists.create(unique_name="secret-list")
acl.sync_lists("secret-list").sync_list_items.create(data={"i": 0})
acl.sync_maps.create(unique_name="secret-map")
acl.sync_maps("secret-map").sync_map_items.create(key="k", data={"m": 1})
p = acl.documents("secret").document_permissions("alice").update(read=True, write=False, manage=False)
assert (p.identity, p.read, p.write, p.manage) == ("alice", True, False, False)
acl.sync_lists("secret-list").sync_list_permissions("alice").update(read=True, write=False, manage=False)
acl.sync_maps("secret-map").sync_map_permissions("alice").update(read=True, write=True, manage=False)
acl.documents("secret").document_permissions("eve").update(read=True, write=False, manage=False)
assert acl.documents("secret").document_permissions("eve").delete() is True
perms = acl.documents("secret").document_permissions.list()
assert [p.identity for p in perms] == ["alice"], [p.identity for p in perms]
assert acl.sync_maps("secret-map").sync_map_permissions("alice").fetch().write is True
refused(lambda: acl.documents("secret").document_permissions("nobody").fetch(), 404, 20404)
step("permissions")

# A token holder over plain HTTP: Bearer acts as the identity, under the same ACL.
base = env["HTTP_URL"] + f"/v1/Services/{env['ACL_SERVICE_SID']}"
http = requests.Session()
http.verify = env["CA_FILE"]
http.trust_env = False
as_alice = {"Authorization": "Bearer " + env["ALICE_TOKEN"]}
as_eve = {"Authorization": "Bearer " + env["EVE_TOKEN"]}
r = http.get(base + "/Documents/secret", headers=as_alice)
assert r.status_code == 200 and r.json()["data"] == {"s": 1}, r.text
r = http.post(base + "/Documents/secret", headers=as_alice, data={"Data": json.dumps({"x": 1})})
assert (r.status_code, r.json()["code"]) == (403, 54007), r.text
r = http.get(base + "/Documents/secret", headers=as_eve)
assert (r.status_code, r.json()["code"]) == (403, 54007), r.text
r = http.get(base + "/Documents/missing", headers=as_eve)
assert (r.status_code, r.json()["code"]) == (403, 54007), "missing and forbidden look alike"
r = http.get(base + "/Documents/secret")
assert r.status_code == 401 and r.json()["code"] == 20003, r.text
r = http.get(env["HTTP_URL"] + "/v1/Services", headers=as_alice)
assert r.status_code == 403, "tokens do not administer"
step("bearer")

# Raw HTTP edges: If-Match on an item delete (the helper drops it), unknown routes,
# malformed parameters.
auth = (env["KEY_SID"], env["KEY_SECRET"])
items_url = env["HTTP_URL"] + f"/v1/Services/{env['SERVICE_SID']}/Lists/py-list/Items"
r = http.delete(items_url + "/4", auth=auth, headers={"If-Match": "0"})
assert (r.status_code, r.json()["code"]) == (412, 54155), r.text
r = http.get(env["HTTP_URL"] + "/v1/Nothing", auth=auth)
assert (r.status_code, r.json()["code"]) == (404, 20404), r.text
r = http.post(items_url, auth=auth, data={"Data": "{}", "Ttl": "soon"})
assert r.status_code == 400 and "Ttl" in r.json()["message"], r.text
r = http.post(items_url, auth=auth, data={"Data": "x" * 200_000})
assert r.status_code == 413, r.status_code
r = http.get(env["HTTP_URL"] + "/healthz")
assert r.status_code == 200
# A body where none is read is dropped, and the answer still arrives.
r = http.post(env["HTTP_URL"] + "/healthz", data={"x": "y" * 100_000})
assert r.status_code == 405, r.status_code
r = http.get(env["HTTP_URL"] + "/healthz", data="z" * 100_000)
assert r.status_code == 200, r.status_code
r = http.get(items_url + "?From=nope", auth=auth)
assert r.status_code == 400 and "From" in r.json()["message"], r.text
r = http.get(env["HTTP_URL"] + "/readyz")
assert r.status_code == 200
r = http.get(env["HTTP_URL"] + "/metrics")
assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain"), r.status_code
metrics = r.text
for needle in [
    'syncline_requests_total{edge="http",kind="write",outcome="ok"}',
    'syncline_requests_total{edge="http",kind="write",outcome="Conflict"}',
    'syncline_requests_total{edge="http",kind="read",outcome="Forbidden"}',
    "syncline_commit_flush_seconds_bucket",
    'syncline_http_responses_total{route="/v1/Services/{service}/{kinds}/{object}",status="412"}',
    "syncline_connections ",
]:
    assert needle in metrics, needle
step("raw")
# Server-sent events: a snapshot, then each change; `since` resumes without a snapshot.
def sse_events(lines, n):
    """The next `n` events from an SSE response's lines, as (event, id, data) tuples."""
    out, event = [], {}
    for line in lines:
        if line is None or line.startswith(":"):
            continue
        if line == "":
            if event:
                out.append((event.get("event"), int(event["id"]), json.loads(event["data"])))
                event = {}
                if len(out) == n:
                    return out
            continue
        field, _, value = line.partition(": ")
        event[field] = value
    raise AssertionError(f"the stream ended after {out}")


service.documents.create(unique_name="py-sse", data={"v": 0})
events_url = env["HTTP_URL"] + f"/v1/Services/{env['SERVICE_SID']}/Documents/py-sse/Events"
with http.get(events_url, auth=auth, stream=True, timeout=20) as r:
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    # One byte at a time: the default chunk size would wait for 512 bytes of events.
    lines = r.iter_lines(chunk_size=1, decode_unicode=True)
    [(kind, rev, body)] = sse_events(lines, 1)
    assert (kind, rev, body["state"]["data"]) == ("snapshot", 0, {"v": 0}), (kind, rev, body)
    service.documents("py-sse").update(data={"v": 1})
    service.documents("py-sse").update(data={"v": 2})
    got = sse_events(lines, 2)
    assert [(k, i, b["data"], b["actor"]) for k, i, b in got] == [
        ("document_updated", 1, {"v": 1}, "system"),
        ("document_updated", 2, {"v": 2}, "system"),
    ], got
with http.get(events_url + "?since=1", auth=auth, stream=True, timeout=20) as r:
    [(kind, rev, body)] = sse_events(r.iter_lines(chunk_size=1, decode_unicode=True), 1)
    assert (kind, rev, body["data"]) == ("document_updated", 2, {"v": 2}), "replayed, no snapshot"
r = http.get(env["HTTP_URL"] + f"/v1/Services/{env['ACL_SERVICE_SID']}/Documents/secret/Events", headers=as_eve, timeout=20)
assert (r.status_code, r.json()["code"]) == (403, 54007), r.text
step("events")
print("all ok")
sys.exit(0)
