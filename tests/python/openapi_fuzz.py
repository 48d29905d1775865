"""/openapi.json against the live server, then schemathesis against it.

Run by tests/tests/openapi.rs with HTTP_URL, CA_FILE, KEY_SID, KEY_SECRET and
optionally SCHEMATHESIS_EXAMPLES, SCHEMATHESIS_SEED and
SCHEMATHESIS_SECONDS (a bound on the run) in the environment. Quiet on success (prints "all ok"); on a
failure prints what went wrong and exits non-zero.
"""

import json
import os
import subprocess
import sys
import tempfile

import requests

env = os.environ
base = env["HTTP_URL"].rstrip("/")
http = requests.Session()
http.verify = env["CA_FILE"]
# Else REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would override the CA, and proxies apply.
http.trust_env = False

# 1. The document: public, JSON, OpenAPI 3.1, every path Syncline serves.
r = http.get(f"{base}/openapi.json")
assert r.status_code == 200, (r.status_code, r.text)
assert r.headers["content-type"].startswith("application/json"), r.headers
doc = r.json()
assert doc["openapi"] == "3.1.0", doc["openapi"]
s = "/v1/Services/{ServiceSid}"
expected = {"/v1/Services", "/v1/Services/{Sid}", f"{s}/Streams/{{StreamSid}}/Messages"}
for kinds, parent in [("Documents", "DocumentSid"), ("Lists", "ListSid"), ("Maps", "MapSid")]:
    expected |= {f"{s}/{kinds}/{{{parent}}}/Permissions", f"{s}/{kinds}/{{{parent}}}/Permissions/{{Identity}}"}
for kinds, key in [("Lists", "Index"), ("Maps", "Key")]:
    parent = kinds[:-1] + "Sid"
    expected |= {f"{s}/{kinds}/{{{parent}}}/Items", f"{s}/{kinds}/{{{parent}}}/Items/{{{key}}}"}
for kinds in ["Documents", "Lists", "Maps", "Streams"]:
    expected |= {f"{s}/{kinds}", f"{s}/{kinds}/{{Sid}}"}
missing = expected - set(doc["paths"])
assert not missing, f"not in /openapi.json: {sorted(missing)}"

# 2. What is served is what the document lists: every documented (path, method) reaches
# a handler (without credentials: 401, or 400 for a missing parameter, never the
# router's 404/405), and other methods are refused with 405.
for path, item in doc["paths"].items():
    concrete = path
    for name in ["ServiceSid", "Sid", "DocumentSid", "ListSid", "MapSid", "StreamSid", "Index", "Key", "Identity"]:
        concrete = concrete.replace("{" + name + "}", "1")
    for method, op in item.items():
        r = http.request(method.upper(), base + concrete)
        public = op.get("security") == []
        if public:
            assert r.status_code in (200, 503), (method, path, r.status_code, r.text)
        else:
            assert r.status_code in (400, 401), (method, path, r.status_code, r.text)
    for method in {"GET", "POST", "DELETE", "PUT", "PATCH"} - {m.upper() for m in item}:
        r = http.request(method, base + concrete, data={"Data": "{}"})
        assert r.status_code == 405, (method, path, r.status_code, r.text)
        assert r.json()["code"] == 20004, r.text
for path in ["/v1/Services/1/Streams/1/Items", "/v1/Services/1/Documents/1/Items", "/v1/Things"]:
    r = http.get(base + path)
    assert r.status_code == 404, (path, r.status_code)
# A path that is not UTF-8 once decoded gets Twilio's error body too, not plain text.
r = http.get(base + "/v1/Services/%FF/Documents")
assert r.status_code == 400 and r.json()["code"] == 20001, (r.status_code, r.text)

# 3. Objects for the nested paths to act on (their parent ids are pinned below, so
# that items, permissions and messages reach the engine instead of a 404).
auth = (env["KEY_SID"], env["KEY_SECRET"])
for kinds, name in [("Documents", "fuzz-doc"), ("Lists", "fuzz-list"), ("Maps", "fuzz-map"), ("Streams", "fuzz-stream")]:
    r = http.post(f"{base}/v1/Services/default/{kinds}", data={"UniqueName": name}, auth=auth)
    assert r.status_code == 201, (kinds, r.status_code, r.text)

# 4. schemathesis: no 5xx, and every answer's status, content type and body as the
# document says.
with tempfile.TemporaryDirectory() as tmp:
    config = os.path.join(tmp, "schemathesis.toml")
    with open(config, "w") as f:
        f.write(
            "[parameters]\n"
            '"path.ServiceSid" = "default"\n'
            '"path.DocumentSid" = "fuzz-doc"\n'
            '"path.ListSid" = "fuzz-list"\n'
            '"path.MapSid" = "fuzz-map"\n'
            '"path.StreamSid" = "fuzz-stream"\n'
        )
    command = [
        sys.executable, "-m", "schemathesis.cli",
        "--config-file", config,
        "run", f"{base}/openapi.json",
        "--url", base,
        "--auth", f"{auth[0]}:{auth[1]}",
        "--tls-verify", env["CA_FILE"],
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples", env.get("SCHEMATHESIS_EXAMPLES", "10"),
        "--seed", env.get("SCHEMATHESIS_SEED", "1"),
        "--no-color",
        "--warnings", "off",
        # Server-sent events answer for as long as the client listens.
        "--exclude-path-regex", "/Events$",
    ]
    # Nothing from the environment picks another CA, a proxy or a config.
    child_env = {k: v for k, v in env.items() if not k.endswith("CA_BUNDLE") and "PROXY" not in k.upper()}
    # `--max-time` would keep fuzzing until the budget is spent; the examples bound the
    # run (about 30 s), and this timeout bounds a server that stops answering.
    seconds = int(env.get("SCHEMATHESIS_SECONDS", "150"))
    try:
        out = subprocess.run(command, capture_output=True, text=True, env=child_env, cwd=tmp, timeout=seconds)
    except subprocess.TimeoutExpired as e:
        print(f"schemathesis did not finish in {seconds} s")
        print((e.stdout or b"")[-20000:].decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")[-20000:])
        sys.exit(1)
    if out.returncode != 0:
        print(" ".join("KEY:SECRET" if c.startswith(auth[0]) else c for c in command))
        print(out.stdout[-20000:])
        print(out.stderr[-5000:])
        sys.exit(1)

print("all ok")
