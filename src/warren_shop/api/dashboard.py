"""The dashboard at ``/dashboard``: pools, dead letters (show, replay, purge) and status lookups.

Server-rendered HTML, no script and no build step: every value is escaped with ``html.escape``;
every action is a form posted back here. Sign-in takes the operators' token once and sets an
HttpOnly, SameSite=Strict cookie holding an HMAC of it (not the token), so the cookie dies with the
token; each form carries a second HMAC of the token, checked on post, against cross-site requests.
The operations themselves are ``warren.dlq``'s, as for the CLI and the JSON API.
"""

from __future__ import annotations

import hmac
import html
import json
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from warren.dlq import Entry
from warren_shop.api.lookup import KINDS, Kind, store_of
from warren_shop.api.operations import SESSION_COOKIE, Operations, authorized, broker_call, operations_of, selection_of

router = APIRouter(prefix="/dashboard", include_in_schema=False)
LISTED = 200  # dead letters listed on the front page (the counts cover all)

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d232a;background:#f5f6f8}
header{background:#22303c;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}
header h1{font-size:18px;margin:0} header form{margin-left:auto}
main{padding:16px 24px;max-width:1280px} section{background:#fff;border:1px solid #dde1e6;border-radius:6px;
padding:12px 16px;margin:0 0 16px} h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f2;
vertical-align:top} th{font-weight:600;color:#58636e} td.n{text-align:right;font-variant-numeric:tabular-nums}
form.inline{display:inline} button,a.button{font:inherit;padding:2px 10px;border-radius:4px;border:1px solid #8894a0;
background:#fff;color:inherit;cursor:pointer;text-decoration:none} .danger{border-color:#b3261e;color:#b3261e}
.notice{background:#e6f4ea;border:1px solid #9fd3ae;padding:8px 12px;border-radius:6px;margin-bottom:16px}
.error{background:#fdecea;border:1px solid #f1a7a1;padding:8px 12px;border-radius:6px;margin-bottom:16px}
header button{background:transparent;color:#fff;border-color:#8da2b5} td.actions{white-space:nowrap}
.muted{color:#6b7680} pre{background:#f5f6f8;padding:8px;overflow:auto;max-height:420px} code{font-size:13px}
"""


def e(value: Any) -> str:
    """``value`` as HTML text: every dashboard value goes through here."""
    return html.escape("-" if value is None else str(value), quote=True)


def page(title: str, body: str, *, notice: str | None = None, error: str | None = None, signed_in: bool = True,
         status_code: int = 200) -> HTMLResponse:
    sign_out = ('<form method="post" action="/dashboard/logout"><button>Sign out</button></form>'
                if signed_in else "")
    flash = (f'<div class="notice" id="notice">{e(notice)}</div>' if notice else "") + (
        f'<div class="error" id="error">{e(error)}</div>' if error else "")
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} · Warren</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
        f'<body><header><h1><a href="/dashboard" style="color:#fff;text-decoration:none">Warren</a></h1>'
        f'<span>{e(title)}</span>{sign_out}</header><main>{flash}{body}</main></body></html>',
        status_code=status_code,
    )


def _viewer(request: Request) -> Operations | Response:
    """The operations for a signed-in operator; else the sign-in page, or why not."""
    try:
        return authorized(request)
    except HTTPException as ex:
        if ex.status_code == 401:
            return RedirectResponse("/dashboard/login", status_code=303)
        return page("Not allowed", f"<p>{e(ex.detail)}</p><p><a href='/dashboard/login'>Sign in</a></p>",
                    signed_in=False, status_code=ex.status_code)


async def _form(request: Request) -> dict[str, str]:
    fields = parse_qs((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def _csrf_field(ops: Operations) -> str:
    return f'<input type="hidden" name="csrf" value="{e(ops.token.derived("dashboard-form"))}">'


def _checked_form(ops: Operations, form: dict[str, str]) -> None:
    if not hmac.compare_digest(form.get("csrf", "").encode(), ops.token.derived("dashboard-form").encode()):
        raise HTTPException(status_code=403, detail="the form is stale or from elsewhere: reload the page")


def _back(notice: str | None = None, error: str | None = None, to: str = "/dashboard") -> RedirectResponse:
    query = urlencode({k: v for k, v in (("notice", notice), ("error", error)) if v})
    return RedirectResponse(f"{to}?{query}" if query else to, status_code=303)


# -- signing in -----------------------------------------------------------------------------------
@router.get("/login")
def login_page(request: Request) -> HTMLResponse:
    return page("Sign in", """<section><h2>Sign in</h2>
<form method="post" action="/dashboard/login"><label>Operator token
<input type="password" name="token" id="token" autocomplete="current-password" size="48"></label>
<button type="submit" id="sign-in">Sign in</button></form>
<p class="muted">The token is in the Secret named by WARREN_API_ADMIN_TOKEN_FILE.</p></section>""", signed_in=False)


@router.post("/login")
async def login(request: Request) -> Response:
    ops = operations_of(request)
    try:
        ops.token.current()
    except HTTPException as ex:
        return page("Sign in", f"<p>{e(ex.detail)}</p>", signed_in=False, status_code=ex.status_code)
    if not ops.token.accepts((await _form(request)).get("token", "").strip()):
        return page("Sign in", "<p>Wrong token. <a href='/dashboard/login'>Try again</a></p>", signed_in=False,
                    status_code=403)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(SESSION_COOKIE, ops.token.derived("dashboard-session"), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- the front page -------------------------------------------------------------------------------
@router.get("")
def overview(request: Request, notice: str | None = None, error: str | None = None) -> Response:
    ops = _viewer(request)
    if isinstance(ops, Response):
        return ops
    problems: list[str] = []
    try:
        queues = broker_call(ops.queues)
    except HTTPException as ex:
        queues, problems = [], [str(ex.detail)]
    try:
        listing = broker_call(lambda: ops.dead_letters().listing(limit=LISTED))
    except HTTPException as ex:
        listing, problems = None, [*problems, str(ex.detail)]
    body = _pools_section(queues) + _reasons_section(ops, listing) + _entries_section(ops, listing) + _lookup_form()
    return page("Operations", body, notice=notice, error="; ".join(filter(None, [error, *problems])) or None)


def _pools_section(queues: list[Any]) -> str:
    rows = "".join(
        f'<tr data-pool="{e(q.pool)}"><td>{e(q.pool)}</td><td class="n">{e(q.ready)}</td>'
        f'<td class="n">{e(q.in_flight)}</td><td class="n">{e(q.consumers)}</td>'
        f'<td class="n">{_rate(q.publish_rate)}</td><td class="n">{_rate(q.ack_rate)}</td>'
        f'<td class="n">{e(q.suspect)}</td><td class="n">{e(q.dead_letters)}</td></tr>' for q in queues)
    source = e(queues[0].source) if queues else "-"
    return (f'<section id="pools"><h2>Pools</h2><table><tr><th>pool</th><th>ready</th><th>in flight</th>'
            f'<th>consumers</th><th>published/s</th><th>acked/s</th><th>suspect</th><th>dead letters</th></tr>'
            f'{rows}</table><p class="muted">From {source}.'
            + (" In-flight counts and rates need WARREN_API_MANAGEMENT_URL." if source == "queue.declare" else "")
            + "</p></section>")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _reasons_section(ops: Operations, listing: Any) -> str:
    if listing is None:
        return ""
    rows = "".join(
        f'<tr><td>{e(pool)}</td><td>{e(reason)}</td><td class="n">{e(n)}</td><td>'
        f'<form class="inline" method="post" action="/dashboard/dlq/replay">{_csrf_field(ops)}'
        f'<input type="hidden" name="pool" value="{e(pool)}"><input type="hidden" name="reason" value="{e(reason)}">'
        f'<button>Replay all {e(n)}</button></form></td></tr>'
        for pool, by_reason in listing.counts.items() for reason, n in sorted(by_reason.items()))
    return ('<section id="reasons"><h2>Dead letters by reason</h2>'
            + (f"<table><tr><th>pool</th><th>reason</th><th>count</th><th></th></tr>{rows}</table>" if rows
               else '<p class="muted">No dead letters.</p>') + "</section>")


def _entries_section(ops: Operations, listing: Any) -> str:
    if listing is None or not listing.entries:
        return ""
    rows = "".join(_entry_row(ops, entry) for entry in listing.entries)
    more = sum(sum(c.values()) for c in listing.counts.values()) - len(listing.entries)
    return ('<section id="dead-letters"><h2>Dead letters</h2><table><tr><th>id</th><th>pool</th><th>task</th>'
            f'<th>reason</th><th>error</th><th>attempts</th><th>dead-lettered at</th><th></th></tr>{rows}</table>'
            + (f'<p class="muted">{more} more not listed: see <code>warren dlq list</code>.</p>' if more > 0 else "")
            + "</section>")


def _entry_row(ops: Operations, entry: Entry) -> str:
    link = f"/dashboard/dlq/{quote(entry.pool, safe='')}/{quote(entry.id, safe='')}"
    return (f'<tr data-id="{e(entry.id)}"><td><a href="{e(link)}">{e(entry.id)}</a></td><td>{e(entry.pool)}</td>'
            f'<td>{e(entry.task_type)}</td><td>{e(entry.reason)}</td><td>{e(entry.error_class)}: '
            f'{e((entry.error_message or "")[:120])}</td><td class="n">{e(entry.attempts)}</td>'
            f'<td>{e(entry.summary()["dead_lettered_at"])}</td><td class="actions">{_actions(ops, entry)}</td></tr>')


def _actions(ops: Operations, entry: Entry) -> str:
    purge = f"/dashboard/purge?{urlencode({'pool': entry.pool, 'id': entry.id})}"
    return (f'<form class="inline" method="post" action="/dashboard/dlq/replay">{_csrf_field(ops)}'
            f'<input type="hidden" name="pool" value="{e(entry.pool)}"><input type="hidden" name="id" '
            f'value="{e(entry.id)}"><button class="replay">Replay</button></form> '
            f'<a class="button danger purge" href="{e(purge)}">Purge…</a>')


def _lookup_form(kind: str = "order", item_id: str = "") -> str:
    options = "".join(f'<option value="{e(k)}"{" selected" if k == kind else ""}>{e(k)}</option>' for k in KINDS)
    return (f'<section id="lookup"><h2>Look up an order or a notification</h2><form method="get" '
            f'action="/dashboard/lookup"><select name="kind">{options}</select> <input name="id" size="40" '
            f'value="{e(item_id)}" placeholder="id"> <button>Look up</button></form></section>')


# -- one dead letter ------------------------------------------------------------------------------
@router.get("/dlq/{pool}/{message_id:path}")
def dead_letter(request: Request, pool: str, message_id: str) -> Response:
    ops = _viewer(request)
    if isinstance(ops, Response):
        return ops
    try:
        entry = broker_call(lambda: ops.dead_letters().show(message_id, pool=pool))
    except HTTPException as ex:
        return page("Dead letter", "", error=str(ex.detail), status_code=ex.status_code)
    if entry is None:
        return page("Dead letter", f"<p>No dead letter {e(message_id)} in pool {e(pool)} (replayed or purged?).</p>",
                    status_code=404)
    d = entry.details()
    fields = "".join(f"<tr><th>{e(k)}</th><td>{e(d[k])}</td></tr>" for k in (
        "id", "pool", "task_type", "correlation_id", "reason", "error_class", "error_message", "attempts",
        "dead_lettered_at", "published_at", "by_broker", "content_type", "body_bytes"))
    history = "".join(f"<tr><td>{e(h.get('attempt'))}</td><td>{e(h.get('at_ms'))}</td><td>{e(h.get('error'))}</td></tr>"
                      for h in d["history"]) or '<tr><td colspan="3" class="muted">none recorded</td></tr>'
    replays = "".join(f"<tr><td>{e(r.get('at_ms'))}</td><td>{e(r.get('reason'))}</td><td>{e(r.get('attempts'))}</td>"
                      "</tr>" for r in d["replay_history"])
    body = (f'<section id="message"><h2>Dead letter</h2><table>{fields}</table><p>{_actions(ops, entry)}</p></section>'
            f'<section><h2>Attempt history</h2><table><tr><th>attempt</th><th>at (ms)</th><th>error</th></tr>'
            f'{history}</table></section>'
            + (f'<section><h2>Replays</h2><table><tr><th>at (ms)</th><th>after</th><th>attempts</th></tr>{replays}'
               f'</table></section>' if replays else "")
            + f'<section><h2>Headers</h2><pre><code>{e(json.dumps(d["headers"], indent=2))}</code></pre></section>'
            f'<section><h2>Body ({e(d["body"]["encoding"])})</h2><pre id="body"><code>'
            f'{e(json.dumps(d["body"]["data"], indent=2) if d["body"]["encoding"] == "json" else d["body"]["data"])}'
            f'</code></pre></section>')
    return page(f"Dead letter {entry.id}", body)


@router.get("/purge")
def confirm_purge(request: Request, pool: str, id: str) -> Response:
    ops = _viewer(request)
    if isinstance(ops, Response):
        return ops
    return page("Purge", f'<section><h2>Delete dead letter {e(id)} of pool {e(pool)} for good?</h2>'
                f'<form method="post" action="/dashboard/dlq/purge">{_csrf_field(ops)}'
                f'<input type="hidden" name="pool" value="{e(pool)}"><input type="hidden" name="id" value="{e(id)}">'
                f'<input type="hidden" name="confirm" value="yes"><button class="danger" id="confirm-purge">'
                f'Delete it</button> <a href="/dashboard">Cancel</a></form></section>')


@router.post("/dlq/replay")
async def replay(request: Request) -> Response:
    return await _settle(request, "replay")


@router.post("/dlq/purge")
async def purge(request: Request) -> Response:
    return await _settle(request, "purge")


async def _settle(request: Request, verb: str) -> Response:
    """Replay or purge what a posted form names: one id, or a pool's dead letters of one reason
    (replay only); then back to the front page saying what was done."""
    ops = _viewer(request)
    if isinstance(ops, Response):
        return ops
    form = await _form(request)
    _checked_form(ops, form)
    pool = form.get("pool") or None
    if verb == "purge" and (form.get("confirm") != "yes" or not form.get("id")):
        return _back(error="a purge needs a message id and confirmation")
    chosen = selection_of(ids=[form["id"]] if form.get("id") else None,
                          reasons=[form["reason"]] if form.get("reason") and verb == "replay" else None)
    dead = ops.dead_letters()
    try:
        outcome = await run_in_threadpool(broker_call, (
            lambda: dead.replay(chosen, pool=pool, rate=ops.config.max_replay_rate)) if verb == "replay" else (
            lambda: dead.purge(chosen, pool=pool)))
    except HTTPException as ex:
        return _back(error=f"{verb} failed: {ex.detail}")
    done = "replayed" if verb == "replay" else "purged"
    what = ", ".join(outcome.ids[:5]) + (f" and {outcome.count - 5} more" if outcome.count > 5 else "")
    if outcome.stopped:
        return _back(error=f"{done} {outcome.count} ({what}), then stopped: {outcome.stopped}")
    return _back(notice=f"{done} {outcome.count} dead letter(s): {what}" if outcome.count
                 else f"nothing to {verb} (already replayed or purged?)")


# -- lookups --------------------------------------------------------------------------------------
@router.get("/lookup")
def lookup(request: Request, kind: str = "order", id: str = "") -> Response:
    ops = _viewer(request)
    if isinstance(ops, Response):
        return ops
    form = _lookup_form(kind, id)
    if kind not in KINDS or not id:
        return page("Look up", form, error="choose order or notification and give an id" if id else None)
    store = store_of(request.app.state)
    if store is None:
        return page("Look up", form + '<section id="history"><p>Status history is not available: this API has no '
                    "status store.</p></section>")
    chosen: Kind = "order" if kind == "order" else "notification"
    history = store.history(chosen, id)
    if history is None:
        return page("Look up", form + f'<section id="history"><p>No {e(kind)} {e(id)}.</p></section>',
                    status_code=404)
    rows = "".join(f"<tr><td>{e(c.at.isoformat())}</td><td>{e(c.status)}</td><td>{e(c.detail)}</td></tr>"
                   for c in history)
    return page("Look up", form + f'<section id="history"><h2>{e(kind)} {e(id)}</h2><table><tr><th>at</th>'
                f"<th>status</th><th>detail</th></tr>{rows}</table></section>")
