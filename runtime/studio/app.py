"""The studio's HTTP API and page, on Starlette (served by uvicorn): JSON in and out, the decision feed as
Server-Sent Events, the annotated live picture as an MJPEG stream. The page (``static/``) uses only this API.

Routes (docs/studio.md has a curl example for each):

=======  ==============================  ===================================================================
GET      /                               the page
GET      /api/state                      everything the page shows (classes, threshold, source, takes, last)
GET      /api/events                     SSE: ``event: decision`` per window, ``event: state`` on every change
GET      /api/live.mjpg                  the annotated live picture (multipart/x-mixed-replace JPEG frames)
GET      /api/frame.jpg                  the newest annotated frame
POST     /api/record                     {"shots": 5, "seconds": 1.33, "countdown": 3, "pause": 1} -> a take
GET      /api/takes/{id}/clips/{n}.jpg   a recorded clip's thumbnail (the T frames enrolment samples)
DELETE   /api/takes/{id}/clips/{n}       discard a clip;  DELETE /api/takes/{id}: the whole take
POST     /api/record/cancel              stop the take being recorded
POST     /api/classes                    {"name": ..., "take": id, "mode": "new" | "add" | "replace"}; no take:
                                         by name only (zero-shot)
POST     /api/classes/remove             {"name": ...}
POST     /api/classes/rename             {"old": ..., "new": ...}
POST     /api/threshold                  {"value": 0.4} live ("value": null: the bundle's again)
POST     /api/threshold/refit            {"far": 0.05}: refit and store in the bundle
=======  ==============================  ===================================================================

Errors are JSON ``{"error": "..."}``: 400 for a refused input (the message says what and why), 404 unknown take or
clip, 401/403/413/415 from :mod:`.guard`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.studio.guard import Guard
from clipfsar.runtime.studio.recorder import TakeNotFound
from clipfsar.runtime.studio.session import StudioSession

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
KEEPALIVE_SECONDS = 15.0
NO_STORE = {"Cache-Control": "no-store"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


async def _json_body(request: Request) -> Dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ClipFsarError(f"the request body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ClipFsarError("the request body must be a JSON object")
    return body


def create_app(session: StudioSession, token: Optional[str] = None, loopback: bool = True,
               max_body: int = 64 * 1024) -> Any:
    """The ASGI app for ``session``, wrapped in :class:`~.guard.Guard` (token, Host, Origin, body size)."""

    async def call(fn, *args) -> Response:
        """Run a blocking session action in the thread pool; refusals become 400 with their message."""
        try:
            return JSONResponse(await run_in_threadpool(fn, *args), headers=NO_STORE)
        except TakeNotFound as e:
            return _error(404, str(e))
        except ClipFsarError as e:
            return _error(400, str(e))

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=NO_STORE)

    async def state(request: Request) -> Response:
        return JSONResponse(session.state(), headers=NO_STORE)

    async def events(request: Request) -> Response:
        async def feed():
            yield f"event: state\ndata: {json.dumps(session.state())}\n\n"
            seq = session.events.seq
            while not session._stop.is_set():
                items = await session.events.wait_after(seq, KEEPALIVE_SECONDS)
                if not items:
                    yield ": keepalive\n\n"
                    continue
                seq = items[-1][0]
                for _, item in items:
                    yield f"event: {item['type']}\ndata: {json.dumps(item.get('state', item))}\n\n"
        return StreamingResponse(feed(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def live(request: Request) -> Response:
        async def parts():
            seq = 0
            while not session._stop.is_set():
                items = await session.frames.wait_after(seq, KEEPALIVE_SECONDS)
                if not items:
                    continue
                seq, (jpeg, index, read_at) = items[-1]
                yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode()
                       + f"\r\nX-Frame-Index: {index}\r\nX-Frame-Read: {read_at:.6f}\r\n\r\n".encode() + jpeg
                       + b"\r\n")
        return StreamingResponse(parts(), media_type="multipart/x-mixed-replace; boundary=frame", headers=NO_STORE)

    async def frame(request: Request) -> Response:
        latest = session.frames.latest()
        if latest is None:
            return _error(503, "no frame yet: the source has not delivered one")
        return Response(latest[0], media_type="image/jpeg", headers=NO_STORE)

    async def record(request: Request) -> Response:
        body = await _json_body(request)
        facts = session.window

        def start():
            take = session.recorder.start(body.get("shots", 5), body.get("seconds", facts),
                                          body.get("countdown", 3.0), body.get("pause", 1.0))
            return {"take": take.to_json()}
        return await call(start)

    async def cancel(request: Request) -> Response:
        return await call(lambda: (session.recorder.cancel(), {"cancelled": True})[1])

    async def thumb(request: Request) -> Response:
        try:
            take = session.recorder.get(request.path_params["take"])
            clip = take.clips.get(request.path_params["n"])
        except ClipFsarError as e:
            return _error(404, str(e))
        if clip is None or not clip.thumb:
            return _error(404, f"take {take.id} has no clip {request.path_params['n']}")
        return Response(clip.thumb, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    async def discard(request: Request) -> Response:
        p = request.path_params
        return await call(lambda: {"take": session.recorder.discard(p["take"], p["n"]).to_json()})

    async def drop(request: Request) -> Response:
        return await call(lambda: (session.recorder.drop(request.path_params["take"]), {"dropped": True})[1])

    async def enroll(request: Request) -> Response:
        b = await _json_body(request)
        return await call(session.enroll, b.get("name"), b.get("take"), b.get("mode", "new"))

    async def remove(request: Request) -> Response:
        b = await _json_body(request)
        return await call(session.remove, b.get("name"))

    async def rename(request: Request) -> Response:
        b = await _json_body(request)
        return await call(session.rename, b.get("old"), b.get("new"))

    async def threshold(request: Request) -> Response:
        b = await _json_body(request)
        if "value" not in b:
            return _error(400, 'give {"value": a number in [0, 1]} (or null for the bundle\'s threshold)')
        return await call(session.set_threshold, b["value"])

    async def refit(request: Request) -> Response:
        b = await _json_body(request)
        return await call(session.refit_threshold, b.get("far", 0.05))

    async def refused(request: Request, exc: Exception) -> Response:
        return _error(400, str(exc))

    routes = [
        Route("/", page),
        Route("/api/state", state),
        Route("/api/events", events),
        Route("/api/live.mjpg", live),
        Route("/api/frame.jpg", frame),
        Route("/api/record", record, methods=["POST"]),
        Route("/api/record/cancel", cancel, methods=["POST"]),
        Route("/api/takes/{take}/clips/{n:int}.jpg", thumb),
        Route("/api/takes/{take}/clips/{n:int}", discard, methods=["DELETE"]),
        Route("/api/takes/{take}", drop, methods=["DELETE"]),
        Route("/api/classes", enroll, methods=["POST"]),
        Route("/api/classes/remove", remove, methods=["POST"]),
        Route("/api/classes/rename", rename, methods=["POST"]),
        Route("/api/threshold", threshold, methods=["POST"]),
        Route("/api/threshold/refit", refit, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={ClipFsarError: refused})
    return Guard(app, token, loopback, max_body)
