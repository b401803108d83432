"""The viewer's web app (FastAPI): read-only pages over a store, safe to open during a run.

Every route is a GET; the app has no endpoint that writes. Each request reads through
:class:`DataSource` (the database itself when free, else the writer's newest snapshot) and
closes what it opened before rendering, so the file is held for milliseconds per page.

Defence in depth around untrusted model output: templates autoescape, a Content-Security-Policy
forbids inline and foreign scripts (the pages carry no script at all), the Host header must be a
loopback name (no DNS rebinding onto a local viewer), and images are re-encoded JPEGs of files
the store names, looked up by sample id.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from data.redaction import redact
from data.store import browse
from data.store.snapshot import DataSource, SourceInfo, SourceUnavailable
from graphs.viewer import dataset_page, queries, reports
from graphs.viewer.render import STATIC, Links, environment
from graphs.viewer.thumbs import DISPLAY_SIDE, THUMB_SIDE, ImageCache, resolve

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]


class _Cache:
    """Small results (filter menus, run lists) per data version: a new snapshot or a changed
    database file invalidates them."""

    def __init__(self) -> None:
        self._data: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def get(self, version: tuple, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if (version, key) in self._data:
                return self._data[(version, key)]
        value = compute()
        with self._lock:
            if len(self._data) > 256:
                self._data.clear()
            self._data[(version, key)] = value
        return value


def _path_tail(request: Request, prefix: str, decoded: str) -> str:
    """The path after ``prefix``, percent-decoded exactly once from the raw request path (a run
    id may itself hold ``%2F``; some servers decode the path twice), else ``decoded``."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes) and raw.startswith(prefix.encode()):
        return unquote(raw[len(prefix) :].decode("latin-1"), errors="strict")
    return decoded


def create_app(
    db: str | Path,
    *,
    snapshot: str | Path | None = None,
    allowed_hosts: list[str] | None = None,
    blur: bool = True,
) -> FastAPI:
    """The viewer for the store at ``db`` (its snapshot defaults to ``<db>.snapshot.duckdb``);
    images blurred until revealed unless ``blur`` is False."""
    source = DataSource(db, snapshot)
    env = environment(blur=blur)
    links = Links()
    images = ImageCache()
    cache = _Cache()
    # sample id -> image path, as the store gave it on pages already rendered: the thumbnails of
    # a page then need no database round trip each (and the file is held open less often).
    known_images: OrderedDict[str, str | None] = OrderedDict()
    known_lock = threading.Lock()

    def remember(rows: list[dict[str, Any]]) -> None:
        with known_lock:
            for row in rows:
                known_images[row["sample_id"]] = row["image_path"]
                known_images.move_to_end(row["sample_id"])
            while len(known_images) > 200_000:
                known_images.popitem(last=False)

    app = FastAPI(
        title="icm view",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.source = source
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def page(name: str, info: SourceInfo | None, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            links=links, source=info, db=str(source.db), export=False, **context
        )
        return HTMLResponse(redact(html), status_code=status)  # served: an output boundary

    def not_found(what: str, info: SourceInfo | None = None) -> HTMLResponse:
        return page("error.html", info, 404, title="Not found", message=what, refresh=None)

    @app.exception_handler(SourceUnavailable)
    async def unavailable(_: Request, exc: SourceUnavailable) -> HTMLResponse:
        return page("error.html", None, 503, title="Waiting for a snapshot", message=str(exc),
                    refresh=2)  # fmt: skip

    @app.exception_handler(FileNotFoundError)
    async def missing(_: Request, exc: FileNotFoundError) -> HTMLResponse:
        return page("error.html", None, 404, title="No database", message=str(exc), refresh=None)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> HTMLResponse:
        title = "Not found" if exc.status_code == 404 else f"Error {exc.status_code}"
        response = page("error.html", None, exc.status_code, title=title,
                        message=str(exc.detail), refresh=None)  # fmt: skip
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    # ------------------------------------------------------------------ pages
    @app.get("/", response_class=HTMLResponse)
    def runs_page(
        q: str = "", status: str = "", sort: str = "created", desc: bool = True,
        refresh: int | None = Query(None, ge=1, le=600),
    ) -> HTMLResponse:  # fmt: skip
        with source.reading() as (store, info):
            rows = queries.runs(store, q=q, status=status, sort=sort, desc=desc)
            judge = reports.judge_summary(store)
            finetunes = browse.table_count(store, "finetune_runs")
            calibrations = browse.table_count(store, "calibrations")
        params = {"q": q, "status": status, "sort": sort, "desc": desc, "refresh": refresh}
        return page("runs.html", info, runs=rows, params=params, refresh=refresh,
                    judge=judge, finetunes=finetunes, calibrations=calibrations)  # fmt: skip

    # ``:path``: a run id may hold any character, a ``/`` included (its link encodes it as %2F,
    # which the server decodes before routing)
    @app.get("/runs/{run_id:path}", response_class=HTMLResponse)
    def run_page(
        request: Request, run_id: str, status: str = "", category: str = "", rule: str = "",
        check: str = "", reason: str = "", page_no: int = Query(1, alias="page", ge=1),
        per: int = queries.DEFAULT_PAGE_SIZE, sort: str = "id", desc: bool = False,
        refresh: int | None = Query(None, ge=1, le=600),
    ) -> HTMLResponse:  # fmt: skip
        run_id = _path_tail(request, "/runs/", run_id)
        filters = queries.SampleFilters(status, category, rule, check, reason)
        with source.reading() as (store, info):
            run = queries.run(store, run_id)
            if run is None:
                return not_found(f"no run {run_id!r} in {source.db}", info)
            facets = cache.get(info.version, ("facets", run_id),
                               lambda: queries.facets(store, run_id))  # fmt: skip
            listing = queries.samples(store, run_id, filters, page=page_no, per_page=per,
                                      sort=sort, desc=desc)  # fmt: skip
        remember(listing.rows)
        params = {**filters.as_params(), "per": listing.per_page, "sort": sort, "desc": desc,
                  "refresh": refresh}  # fmt: skip
        return page("run.html", info, run=run, facets=facets, listing=listing, params=params,
                    filters=filters, statuses=queries.STATUSES, page_sizes=queries.PAGE_SIZES,
                    refresh=refresh)  # fmt: skip

    @app.get("/samples/{sample_id}", response_class=HTMLResponse)
    def sample_page(sample_id: str) -> HTMLResponse:
        with source.reading() as (store, info):
            trace = queries.sample(store, sample_id)
        if trace is None:
            return not_found(f"no sample {sample_id!r} in {source.db}", info)
        return page("sample.html", info, t=trace, refresh=None)

    def image_response(sample_id: str, side: int) -> Response:
        with known_lock:
            known = sample_id in known_images
            stored = known_images.get(sample_id)
        if not known:
            with source.reading() as (store, _):
                stored = queries.image_path(store, sample_id)
        path = resolve(stored, source.db)
        data = images.jpeg(path, side) if path is not None else None
        if data is None:
            raise HTTPException(404, f"no readable image for sample {sample_id!r}")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=300"})

    @app.get("/thumb/{sample_id}.jpg")
    def thumb(sample_id: str) -> Response:
        return image_response(sample_id, THUMB_SIDE)

    @app.get("/image/{sample_id}.jpg")
    def image(sample_id: str) -> Response:
        return image_response(sample_id, DISPLAY_SIDE)

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(run: list[str] = Query(default_factory=list)) -> HTMLResponse:  # noqa: B008
        chosen = list(dict.fromkeys(run))
        comp, rows, error = None, [], None
        with source.reading() as (store, info):
            all_runs = queries.runs(store, sort="created", desc=True)
            if len(chosen) >= 2:
                try:
                    comp = reports.comparison(store, chosen)
                    rows = reports.comparison_rows(comp)
                except (LookupError, ImportError) as exc:
                    error = str(exc)
        return page("compare.html", info, all_runs=all_runs, chosen=chosen, comp=comp,
                    rows=rows, error=error, plots=reports.PLOTS, refresh=None)  # fmt: skip

    @app.get("/compare/plot/{name}.png")
    def compare_plot(name: str, run: list[str] = Query(default_factory=list)) -> Response:  # noqa: B008
        if name not in reports.PLOTS or len(run) < 2:
            raise HTTPException(404, "unknown plot")
        with source.reading() as (store, info):
            try:
                png = cache.get(info.version, ("plot", name, tuple(run)),
                                lambda: reports.comparison_plot(store, run, name))  # fmt: skip
            except (LookupError, ImportError, RuntimeError) as exc:
                raise HTTPException(404, str(exc)) from exc
        if png is None:
            raise HTTPException(404, f"the {name} plot has nothing to show for these runs")
        return Response(png, media_type="image/png")

    @app.get("/dataset", response_class=HTMLResponse)
    def coverage_page(run: list[str] = Query(default_factory=list)) -> HTMLResponse:  # noqa: B008
        chosen = list(dict.fromkeys(run))
        view, error = None, None
        with source.reading() as (store, info):
            all_runs = queries.runs(store, sort="created", desc=True)
            if chosen:
                try:
                    view = cache.get(info.version, ("dataset", tuple(chosen)),
                                     lambda: dataset_page.view(store, chosen))  # fmt: skip
                except (LookupError, ValueError) as exc:
                    error = str(exc)
        return page("dataset.html", info, all_runs=all_runs, chosen=chosen, view=view,
                    error=error, refresh=None)  # fmt: skip

    @app.get("/dataset/plot/{policy}.png")
    def coverage_plot(policy: str, run: list[str] = Query(default_factory=list)) -> Response:  # noqa: B008
        chosen = list(dict.fromkeys(run))
        with source.reading() as (store, info):
            try:
                view = cache.get(info.version, ("dataset", tuple(chosen)),
                                 lambda: dataset_page.view(store, chosen))  # fmt: skip
                png = dataset_page.plot(view, policy)
            except (LookupError, ValueError, ImportError, RuntimeError) as exc:
                raise HTTPException(404, str(exc)) from exc
        return Response(png, media_type="image/png")

    @app.get("/judge", response_class=HTMLResponse)
    def judge_page() -> HTMLResponse:
        with source.reading() as (store, info):
            judge = reports.judge_summary(store)
            calibrations = reports.calibrations(store)
        return page("judge.html", info, judge=judge, calibrations=calibrations, refresh=None)

    @app.get("/finetune", response_class=HTMLResponse)
    def finetune_page() -> HTMLResponse:
        with source.reading() as (store, info):
            runs = reports.finetune_runs(store)
        return page("finetune.html", info, finetunes=runs, refresh=None)

    return app
