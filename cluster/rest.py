"""The REST daemon: a Ray Serve deployment with a FastAPI ingress (uvicorn on uvloop).

    POST /search           multipart: image; optional category, box "x,y,w,h", k, filters
    POST /search/batch     several images (image=...); a category and a box per image (optional), k, filters
    POST /items            image + title (+ id, attributes)          API key
    GET/DELETE /items/{id}, GET /items/{id}/image                    (DELETE: API key)
    GET /stats, GET /health, POST /admin/rebalance                   (rebalance: API key)
    GET /                  the web page; /openapi.json and /docs from FastAPI

Queries go from this replica straight to the shard actors (a Router); writes go
through the coordinator actor. Every error is JSON with a status that says whose
fault it is: 4xx for the request, 503 with Retry-After when a shard is away.
(No `from __future__ import annotations` here: FastAPI must see the real types.)
"""

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import ray
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image
from pydantic import BaseModel
from ray import serve

from coordinator.router import Router, last_line
from shards.errors import FashionSearchError, InvalidInput, NotFound, StorageFull, storage_error
from shards.files import write_atomically
from shards.query import Query

from .health import cluster_health
from .metrics import SearchMetrics
from .request_options import check_options, from_query_if_absent, route_options
from .settings import Settings
from .shown_photo import etag, for_browser
from .shard_actor import NAMESPACE, shard_clients
from .uncancelled import run_to_end, submit
from .uploads import new_upload, photo_path, upload_name, uploads_folder

if TYPE_CHECKING:
    from models.data import Photo

WEB = Path(__file__).resolve().parent / "web"
MAX_K = 200
MAX_LIST_PAGE = 1000   # items in a page of GET /items
MAX_ITEM_TOKENS = 64   # tokens an item may be given by PATCH /items/{id}
HEALTH_TIMEOUT_S = 2.0   # a probe must not wait long: a shard slower than this counts as unavailable
log = logging.getLogger("ray.serve")   # a replica's log file under Ray's session logs/serve


async def _timed(awaitable):
    """The awaitable's result and the milliseconds until it came."""
    t = time.perf_counter()
    out = await awaitable
    return out, (time.perf_counter() - t) * 1e3


async def _ready(value):
    return value


def _on_square(arr: np.ndarray) -> np.ndarray:
    """A whole photo on a square of its border colour, as models/framing.py frames it."""
    from models.framing import on_square
    return np.asarray(on_square(Image.fromarray(arr)))


class ErrorBody(BaseModel):
    error: str


def _errors(*codes: int) -> dict:
    return {c: {"model": ErrorBody} for c in codes}


READ_ERRORS = _errors(400, 404, 413, 415, 422, 429, 503)
WRITE_ERRORS = _errors(400, 401, 403, 404, 413, 415, 422, 429, 503, 507)   # 507: the disk is full

async def _known_options(request: Request) -> None:
    """Every API route refuses an option it does not take (cluster/request_options.py)."""
    route = request.scope.get("route")
    if route is None or not getattr(route, "include_in_schema", False):   # the web page's own files
        return
    ctype = request.headers.get("content-type", "").lower()
    form = []
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = list((await request.form()).multi_items())   # parsed once: FastAPI has read it already
    check_options(f"{request.method} {route.path}", route_options(route),
                  list(request.query_params.multi_items()), form)


def _with_query(request: Request, repeatable: tuple[str, ...] = (), **form_values) -> tuple:
    """The options of a multipart route, each from its form field or else from the query string."""
    query = list(request.query_params.multi_items())
    return tuple(from_query_if_absent(query, name, value, name in repeatable) for name, value in form_values.items())


app = FastAPI(title="fashion-search", version="0.1.0", dependencies=[Depends(_known_options)],
              description="Visual search over a fashion catalog: recognised attributes filter an inverted "
                          "index, binary appearance codes and colour rank the results. Every route refuses "
                          "an option it does not take; a multipart route's options may also come in the "
                          "query string (`/search?k=5`).")


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        self.status, self.message, self.headers = status, message, headers or {}


@contextlib.contextmanager
def _naming(i: int, upload: UploadFile):
    """Errors about one photo of a batch name it: 'image 1 (b.jpg): ...'."""
    try:
        yield
    except InvalidInput as exc:
        raise InvalidInput(f"image {i} ({upload.filename}): {exc}") from exc
    except HttpError as exc:
        raise HttpError(exc.status, f"image {i} ({upload.filename}): {exc.message}", exc.headers) from exc


async def _named(i: int, upload: UploadFile, work):
    with _naming(i, upload):
        return await work


@app.exception_handler(HttpError)
async def _http_error(request, exc: HttpError):
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(request, exc: RequestValidationError):
    msgs = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"error": msgs}, status_code=422)


@app.exception_handler(FashionSearchError)
async def _ours(request, exc: FashionSearchError):
    if isinstance(exc, InvalidInput):
        return JSONResponse({"error": str(exc)}, status_code=400)
    if isinstance(exc, NotFound):
        return JSONResponse({"error": str(exc)}, status_code=404)
    if isinstance(exc, StorageFull):   # no Retry-After: retrying waits for someone to free space
        return JSONResponse({"error": str(exc)}, status_code=507)
    return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})


@app.exception_handler(ray.exceptions.RayError)
async def _ray_error(request, exc):
    """A model replica or actor that died mid-request: the request may be retried."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, FashionSearchError):
        return await _ours(request, cause)
    # the replica's log (Ray Serve's) keeps what went wrong; the client gets a short retry notice
    if not isinstance(exc, ray.exceptions.TaskCancelledError):   # cancelled: the client has gone
        log.warning("%s %s answered 503: %s", request.method, request.url.path, last_line(str(exc)))
    return JSONResponse({"error": f"a part of the cluster is restarting ({type(exc).__name__}); retry shortly"},
                        status_code=503, headers={"Retry-After": "1"})


def _store_durably(path: Path, data: bytes) -> Path:
    """The photo on disk, fsync'd, before its item is acknowledged: it survives a crash as the item does."""
    try:
        write_atomically(path, data)
    except OSError as exc:   # a full disk, say: nothing indexed yet, nothing half-written kept
        raise storage_error(f"cannot store the uploaded photo: {exc.strerror or exc}", exc) from exc
    return path


def _is(exc: BaseException, kind: type) -> bool:
    """exc is `kind`, or Ray's wrapper of a `kind` raised inside an actor."""
    return isinstance(exc, kind) or isinstance(getattr(exc, "cause", None), kind)


def parse_id(raw: str):
    """Path and form ids (shards/codes.py id_from_text): "42" is item 42, "007" and "sku-1" string ids."""
    from shards.codes import id_from_text
    return id_from_text(raw)


def parse_box(raw):
    """'x,y,w,h' (a form field, a CSV cell) or four numbers (JSON) -> a tuple of floats, or None."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, (list, tuple)):
        parts = list(raw)
    elif isinstance(raw, str):
        parts = raw.split(",")
    else:
        raise InvalidInput(f"box is 'x,y,w,h', got {raw!r}")
    if len(parts) != 4:
        raise InvalidInput(f"box is 'x,y,w,h', got {raw!r}")
    try:
        return tuple(float(p) for p in parts)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"box is four numbers 'x,y,w,h', got {raw!r}") from exc


ROI_MODES = ("detector", "match")


def parse_roi_mode(raw: str | None) -> str:
    mode = (raw or "detector").strip().lower()
    if mode not in ROI_MODES:
        raise InvalidInput(f"roi is one of {', '.join(ROI_MODES)}, got {raw!r}")
    return mode


def parse_count(raw, name: str, most: int) -> int:
    try:
        n = int(str(raw))
    except ValueError:
        n = 0
    if not 1 <= n <= most:
        raise InvalidInput(f"{name} must be an integer in [1, {most}], got {raw!r}")
    return n


MAX_PHOTO_SIDE = 4096


def parse_k(raw) -> int:
    return parse_count(raw, "k", MAX_K)


def parse_tokens(raw: str | None) -> tuple[str, ...]:
    from shards.codes import check_token
    if not raw:
        return ()
    return tuple(check_token(t.strip()) for t in raw.split(",") if t.strip())


def _item(got: dict) -> dict:
    """An item as GET /items answers it: its stored image is served at image_url, not named by path."""
    meta = {k: v for k, v in got["meta"].items() if k != "image"}
    return {"id": got["id"], "attributes": got["attributes"], "meta": meta, "image_url": f"/items/{got['id']}/image"}


def _hit(h) -> dict:
    """A hit as the API answers it: its image by URL, no server path out."""
    return {**{k: v for k, v in h.to_dict().items() if k != "image"}, "image_url": f"/items/{h.id}/image"}


# before the class: serve.ingress pickles the app's routes, and what they call, as it decorates
@ray.remote(num_cpus=0, max_retries=0)
def _check_root(path: str) -> dict:
    """`fashion-search check` in a worker of its own: it reads every shard of the root into memory
    (577 MB for 1M items), which a replica that answers searches should not hold."""
    from .check import check_root
    return check_root(path)


async def _json_object(request: Request) -> dict:
    """The request's JSON body, which must be an object ({} when empty)."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object, got {body!r}")
    return body


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
@serve.ingress(app)
class Frontend:
    def __init__(self, attributes, roi, features, settings: dict):
        self.attributes, self.roi, self.features = attributes, roi, features
        self.settings = Settings(**settings)
        self.coordinator = ray.get_actor("fashion-coordinator", namespace=NAMESPACE)
        info = ray.get(self.coordinator.ready.remote())
        self.config = info["config"]
        self.router = Router({}, 0, bits=self.config["bits"], hist_bins=self.config["hist_bins"],
                             timeout_s=self.settings.shard_timeout_s, refresh=self._refresh)
        burst = 2 * self.settings.rate_limit   # a new client starts with a full bucket
        self.buckets: dict[str, list[float]] = defaultdict(lambda: [burst, time.monotonic()])
        self.root = Path(self.settings.storage)
        self.uploads = uploads_folder(self.root)
        self._vocabulary = None     # the networks' taxonomy, read on first use (_taxonomy)
        self.metrics = SearchMetrics()
        from models.data import ASSETS
        from models.features import colour_weight
        self.w_colour = colour_weight(ASSETS / "features.pt")

    async def _refresh(self):
        placement = await submit(self.coordinator.placement)
        self.router.clients = shard_clients(placement["shards"], self.router.clients)
        self.router.version = placement["version"]

    # ------------------------------------------------------------ guards
    def _limit(self, request: Request) -> None:
        """A token bucket per client address: `rate_limit` requests/s, bursts of twice that."""
        rate = self.settings.rate_limit
        if rate <= 0:
            return
        b = self.buckets[request.client.host if request.client else "?"]
        now = time.monotonic()
        b[0] = min(2 * rate, b[0] + (now - b[1]) * rate)
        b[1] = now
        if b[0] < 1:
            raise HttpError(429, "too many requests", {"Retry-After": "1"})
        b[0] -= 1

    def _auth(self, request: Request) -> None:
        key = self.settings.api_key
        if not key:
            raise HttpError(403, "writes and admin calls are off: no API key is configured")
        given = request.headers.get("x-api-key")
        if given is None:
            raise HttpError(401, "this call needs the X-API-Key header")
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise HttpError(403, "wrong API key")

    async def _image(self, upload: UploadFile) -> tuple["Photo", bytes]:
        from models.data import decode_photo
        if upload is None:
            raise InvalidInput("an image is required")
        ctype = (upload.content_type or "").lower()
        if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise HttpError(415, f"the image part must be an image, got content type {ctype!r}")
        data = await upload.read(self.settings.max_upload_bytes + 1)
        if len(data) > self.settings.max_upload_bytes:
            raise HttpError(413, f"image over the upload limit of {self.settings.max_upload_bytes} bytes")
        if not data:
            raise InvalidInput("the image is empty (zero bytes)")
        # read as the networks see it, at most WORKING_SIDE a side (models/data.py), and off the
        # event loop: other requests would wait on it (a 12 Mpixel phone photo: benchmarks/RESULTS.md)
        return await asyncio.to_thread(decode_photo, data, self.settings.max_pixels), data

    async def _category(self, raw: str | None) -> str | None:
        if raw is None or raw.strip() == "" or raw.strip().lower() == "auto":
            return None
        from models.taxonomy import resolve_category
        tax = await self._taxonomy()
        # 'trousers' names 'Trousers'
        return resolve_category(raw, [t.split("=", 1)[1] for t in tax.category_tokens()],
                                listed_at="GET /categories")

    async def _tokens(self, tokens) -> tuple[str, ...]:
        """Filters or given attributes as the index spells them: 'gender=men' is 'gender=Men'
        (models/taxonomy.py `resolve_token`; a shop's own tokens are kept as given)."""
        return (await self._taxonomy()).resolve_tokens(tokens) if tokens else ()

    async def _taxonomy(self):
        """The vocabulary the attribute replicas read, asked of them once."""
        if self._vocabulary is None:
            from models.taxonomy import Taxonomy
            self._vocabulary = Taxonomy(**await self.attributes.taxonomy.remote())
        return self._vocabulary

    # ------------------------------------------------------------ the analysis of one image
    async def _analyse(self, photo: "Photo", category: str | None, box, roi_mode: str = "detector",
                       runners_up: bool = False, stated: dict | None = None, belief: dict | None = None) -> dict:
        """ROI (the user's box, the guided detector, or the whole photo), then the attributes
        and the code + histogram inside it, read at the same time (models/pipeline.py reads them
        in turn, on one process). `stated`, `belief`: what a catalog item's title states, and says
        about each category (its category is then the one title and photo together make likeliest)."""
        from models.colour import check_box
        from models.framing import scale_box
        t0 = time.perf_counter()
        # a big photo is read in a smaller copy (models/data.py Photo); boxes in, ROIs out in its own pixels
        arr, factor, size = np.asarray(photo.image), photo.factor, photo.size
        given_box = check_box(box, size) if box is not None else None
        crop_box = scale_box(given_box, 1 / factor, (arr.shape[1], arr.shape[0])) if given_box else None
        described, look = None, None
        if crop_box is not None:
            roi, roi_src = crop_box, "user"
        elif roi_mode == "match":
            roi, roi_src, described = await self._best_matching_region(arr, category)
        else:
            found = await self.roi.locate.remote((arr, category))
            roi, roi_src = (found[0], "detector") if found else ((0, 0, arr.shape[1], arr.shape[0]), "whole image")
            look = found[1] if found else None
        x0, y0, x1, y1 = (int(v) for v in roi)
        crop = _on_square(arr) if roi_src == "whole image" else np.ascontiguousarray(arr[y0:y1, x0:x1])
        t1 = time.perf_counter()
        if described is not None:
            reading = _ready(described)
        elif look is not None:      # a detection's appearance is read in the box inset
            lx0, ly0, lx1, ly1 = look
            reading = self.features.describe.remote(np.ascontiguousarray(arr[ly0:ly1, lx0:lx1]))
        else:
            reading = self.features.describe.remote(crop)
        # The attributes and the appearance of one ROI are read on two replicas at once.
        ((attrs, alternatives), t_attr), ((code, hist), t_feat) = await asyncio.gather(
            _timed(self.attributes.recognise.remote((crop, category, runners_up, stated, belief))), _timed(reading))
        auto_cat = next((t.split("=", 1)[1] for t, _ in attrs if t.startswith("articleType=")), None)
        source = "user" if category else "auto"
        if belief is not None:          # the title's belief and the photo chose it (models/pipeline.py)
            source = "title" if category == auto_cat else "title and photo"
            category = auto_cat
        x0, y0, x1, y1 = given_box or scale_box((x0, y0, x1, y1), factor, size)
        return {"attributes": attrs, "alternatives": alternatives, "category": category or auto_cat,
                "category_source": source,
                "roi": [x0, y0, x1 - x0, y1 - y0], "roi_source": roi_src, "code": code, "hist": hist,
                "ms": {"roi": (t1 - t0) * 1e3, "attributes": t_attr, "features": t_feat,
                       "analysis": (time.perf_counter() - t0) * 1e3}}

    async def _best_matching_region(self, arr: np.ndarray, category: str | None):
        """Option 1 with the catalog choosing: code the detector's top regions and the whole
        photo, ask the index for each one's best hit, keep the region whose hit is closest
        (models/pipeline.py `Pipeline.query(match=...)` is the same rule)."""
        whole = (0, 0, arr.shape[1], arr.shape[0])
        regions = list(await self.roi.regions.remote((arr, category))) + [(whole, whole)]
        rois = [r for r, _ in regions]
        crops = [np.ascontiguousarray(arr[y0:y1, x0:x1]) for _, (x0, y0, x1, y1) in regions[:-1]] + [_on_square(arr)]
        described = await asyncio.gather(*(self.features.describe.remote(c) for c in crops))
        rs = await self.router.search_batch([Query(code=c, hist=h, k=1, w_colour=self.w_colour) for c, h in described])
        scores = [r.hits[0].score if r.hits else float("inf") for r in rs]
        best = int(np.argmin(scores))
        return rois[best], ("whole image" if rois[best] == whole else "best match"), described[best]

    @staticmethod
    def _given(a: dict) -> str | None:
        """The category the user named, if any: the model's own read must earn its place (query_terms)."""
        return a["category"] if a["category_source"] == "user" else None

    def _query(self, a: dict, k: int, filters: tuple[str, ...]) -> Query:
        from models.pipeline import query_terms
        return Query(code=a["code"], hist=a["hist"], k=k, filters=filters, w_colour=self.w_colour,
                     **query_terms(a["attributes"], self._given(a)))

    async def _search(self, analyses: list[dict], k: int, filters: tuple[str, ...]) -> list[dict]:
        """Each photo's answer: its query and, when it hedges its category, the runner-up's
        (models/hedge.py), all in one batch to the shards."""
        from models.hedge import answers, hedge_query, with_hedges
        from models.pipeline import hedge_terms
        qs = [self._query(a, k, filters) for a in analyses]
        hedges = [hedge_query(q, hedge_terms(a["attributes"], a["alternatives"], self._given(a)))
                  for q, a in zip(qs, analyses)]
        t = time.perf_counter()
        rs = await self.router.search_batch(with_hedges(qs, hedges))
        took = (time.perf_counter() - t) * 1e3
        out = [self._result(a, r, hits, rh, h, took, filters)
               for a, (r, hits, rh), h in zip(analyses, answers(rs, hedges), hedges)]
        for result in out:
            self.metrics.searched(result)
        return out

    def _result(self, a: dict, r, hits, rh, hedge, t_search: float, filters: tuple[str, ...] = ()) -> dict:
        from models.hedge import hedged_category
        missing = sorted(set(r.missing) | set(rh.missing if rh is not None else ()))
        warnings = []
        if filters and not hits and not missing:   # the photo's own terms relax away; filters never do
            # filters were resolved through the taxonomy, so it is read by now
            warnings.append(f"{self._vocabulary.unmet_filters(filters)}; "
                            "GET /items/{id} shows the tokens an item is indexed under")
        return {
            "category": a["category"], "category_source": a["category_source"],
            "attributes": [{"token": t, "probability": p} for t, p in a["attributes"]],
            "roi": a["roi"], "roi_source": a["roi_source"],
            "results": [_hit(h) for h in hits],
            "relaxed": list(r.relaxed), "widened": list(r.widened),
            "hedged": hedged_category(hedge),   # the runner-up category also searched
            "partial": bool(missing), "missing_shards": missing,
            "candidates": r.candidates + (rh.candidates if rh is not None else 0),
            "warnings": warnings,
            "timings_ms": {**a["ms"], "search": t_search, "total": a["ms"]["analysis"] + t_search},
        }

    # ------------------------------------------------------------ endpoints
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(self):
        return HTMLResponse((WEB / "index.html").read_text())

    @app.get("/static/{name}", include_in_schema=False)
    def static(self, name: str):
        path = (WEB / name).resolve()
        if path.parent != WEB.resolve() or not path.is_file():
            raise HttpError(404, "no such file")
        return FileResponse(path)

    @app.get("/samples", summary="Sample street photos for the web page", responses=READ_ERRORS)
    def samples(self):
        folder = Path(self.settings.samples)
        return sorted(p.name for p in folder.glob("*.jpg")) if folder.is_dir() else []

    @app.get("/samples/{name}", include_in_schema=False)
    def sample(self, name: str):
        folder = Path(self.settings.samples).resolve()
        path = (folder / name).resolve()
        if path.parent != folder or not path.is_file():
            raise HttpError(404, "no such sample")
        return FileResponse(path, media_type="image/jpeg")

    @app.get("/categories", summary="The fashion-categories a query may name", responses=READ_ERRORS,
             description="A sorted list; with `grouped=true`, an object of great-category -> its categories.")
    async def categories(self, grouped: bool = False):
        if grouped:
            return await self.attributes.category_groups.remote()
        return sorted(await self.attributes.categories.remote())

    @app.get("/health", responses=READ_ERRORS)
    async def health(self):
        """`ok`, `degraded` (searches answer, maybe partial; writes may wait) or `down` (503): see cluster/health.py."""
        status, body = await cluster_health(self._refresh(), lambda: self.router.clients, HEALTH_TIMEOUT_S)
        return JSONResponse(body, status_code=status, headers={"Retry-After": "1"} if status == 503 else None)

    @app.post("/search", summary="Search by photo (option 1: nothing else; 2: a category; 3: a box)",
              description="`k`: how many hits (default 20, at most 200). Without a box, `roi=detector` "
                          "(default) takes the detector's most confident "
                          "region; `roi=match` codes its top regions and the whole photo and keeps the one "
                          "whose best catalog hit is closest (finds products in busy photos far more often, "
                          "at ~2.5x the model time). When the model reads the category itself, sure enough "
                          "to require it, but gives another one p >= `HEDGE_P` (models/pipeline.py), that "
                          "runner-up is searched too: its products that match better than all of the read "
                          "category's come first, and `hedged` names it.",
              responses=READ_ERRORS)
    async def search(self, request: Request, image: UploadFile = File(...), category: str | None = Form(None),
                     box: str | None = Form(None), k: str | None = Form(None), filters: str | None = Form(None),
                     roi: str | None = Form(None)):
        self._limit(request)
        category, box, k, filters, roi = _with_query(request, category=category, box=box, k=k, filters=filters,
                                                     roi=roi)
        k = "20" if k is None else k
        k_val, box_val, mode = parse_k(k), parse_box(box), parse_roi_mode(roi)
        filt = await self._tokens(parse_tokens(filters))
        cat = await self._category(category)
        photo, _ = await self._image(image)
        a = await self._analyse(photo, cat, box_val, mode)
        return (await self._search([a], k_val, filt))[0]

    @app.post("/search/batch", summary="Several photos in one request",
              description="`category` and `box` fields, when given, come once per image, in order (an "
                          "empty one: none for that image), as options 2 and 3 of `/search`; `filters`, "
                          "`k` and `roi` hold for every image (`roi` for those without a box).",
              responses=READ_ERRORS)
    async def search_batch(self, request: Request, image: list[UploadFile] = File(...),
                           category: list[str] | None = Form(None), box: list[str] | None = Form(None),
                           k: str | None = Form(None), filters: str | None = Form(None),
                           roi: str | None = Form(None)):
        self._limit(request)
        category, box, k, filters, roi = _with_query(request, ("category", "box"), category=category, box=box, k=k,
                                                     filters=filters, roi=roi)
        k = "20" if k is None else k
        k_val, mode = parse_k(k), parse_roi_mode(roi)
        filt = await self._tokens(parse_tokens(filters))
        if len(image) > self.settings.max_batch:
            raise InvalidInput(f"at most {self.settings.max_batch} images per batch, got {len(image)}")
        for name, given in (("category", category), ("box", box)):
            if given is not None and len(given) != len(image):
                raise InvalidInput(f"give one {name} per image (an empty one for none), or none: "
                                   f"{len(given)} for {len(image)} images")
        cats, boxes, photos = [], [], []
        for i, (u, c, b) in enumerate(zip(image, category or [None] * len(image), box or [None] * len(image))):
            with _naming(i, u):       # an error says which photo of the batch it is about
                cats.append(await self._category(c or None))
                boxes.append(parse_box(b))
                photos.append((await self._image(u))[0])
        analyses = await asyncio.gather(*(_named(i, u, self._analyse(p, c, b, mode))
                                          for i, (u, p, c, b) in enumerate(zip(image, photos, cats, boxes))))
        return {"queries": await self._search(analyses, k_val, filt)}

    @app.post("/items", status_code=201, summary="Add (or replace) a catalog item; searchable on return",
              responses=WRITE_ERRORS)
    async def add_item(self, request: Request, image: UploadFile = File(...), title: str | None = Form(None),
                       id: str | None = Form(None), attributes: str | None = Form(None)):
        self._auth(request)
        self._limit(request)
        title, id, attributes = _with_query(request, title=title, id=id, attributes=attributes)
        if title is None or not title.strip() or len(title) > 1000:
            raise InvalidInput("title must be 1..1000 characters")
        item_id = parse_id(id) if id else uuid.uuid4().hex
        from models.pipeline import index_tokens
        given = await self._tokens(parse_tokens(attributes))
        photo, data = await self._image(image)
        [(category, stated, belief)] = await self.attributes.read_titles.remote([title])
        a = await self._analyse(photo, category, None, runners_up=not given, stated=stated, belief=belief)
        tokens = list(given) if given else index_tokens(a["attributes"], a["alternatives"])
        replaced = await self._uploaded_image(item_id) if id else None
        await run_to_end(self._write_item(item_id, a, tokens, title, data, replaced))
        self.metrics.written("add")
        # attributes: what the item is indexed under (as GET /items/{id} says); recognised and
        # runners_up: the model's read and the close second values that were indexed too;
        # from_title: the values the title fixed (their probability is the photo's own opinion)
        told = ([f"articleType={category}"] if category else []) + [f"{f}={v}" for f, v in stated.items()]
        return {"id": item_id, "attributes": tokens, "category": a["category"], "roi": a["roi"],
                "roi_source": a["roi_source"],
                "from_title": [t for t, _ in a["attributes"] if t in told],
                "recognised": [{"token": t, "probability": p} for t, p in a["attributes"]],
                "runners_up": [{"token": t, "probability": p} for t, p in a["alternatives"] if t in tokens]}

    async def _write_item(self, item_id, a: dict, tokens: list, title: str, data: bytes, replaced: Path | None):
        """Store the photo, index the item, remove the photo it replaced: all of it, or (refused) none."""
        recorded = new_upload()   # relative to the storage root: a copy of the root finds it (uploads.py)
        path = _store_durably(self.root / recorded, data)
        meta = {"title": title, "image": recorded}
        try:
            await submit(self.coordinator.upsert, [item_id], a["code"][None], a["hist"][None], [tokens], [meta])
        except Exception as exc:
            if _is(exc, InvalidInput):       # refused before anything was written: keep nothing
                path.unlink(missing_ok=True)
            raise                            # otherwise it may have been written: the image stays
        if replaced is not None and replaced != path:
            replaced.unlink(missing_ok=True)  # the item's previous photo, now referenced by nothing

    @app.get("/items", summary="The whole catalog, a page at a time",
             description="Items in a fixed order (not by id): pass each answer's `next_cursor` back as "
                         "`cursor` for the next page; it is null after the last. Every item indexed before "
                         "the first page and not deleted meanwhile is listed exactly once, rebalances "
                         "included; an item added or deleted while you page may or may not be. `filters` "
                         "(comma-separated tokens, as on /search): only the items that carry them all; keep "
                         "the same filters from page to page.",
             responses=READ_ERRORS)
    async def list_items(self, request: Request, cursor: str | None = None, limit: str = "100",
                         filters: str | None = None):
        self._limit(request)
        page = await submit(self.coordinator.list_items, cursor, parse_count(limit, "limit", MAX_LIST_PAGE),
                            await self._tokens(parse_tokens(filters)))
        return {"items": [_item(it) for it in page["items"]], "next_cursor": page["next_cursor"]}

    @app.get("/items/{item_id}", responses=READ_ERRORS)
    async def get_item(self, item_id: str):
        return _item(await submit(self.coordinator.get, parse_id(item_id)))

    @app.patch("/items/{item_id}", responses=WRITE_ERRORS,
               summary="Correct an item's attributes or title; its photo, code and colour stay",
               description="A JSON object with `attributes` (a list of tokens: they replace all of the "
                           "item's, its category's included) and/or `title`. Answers the item as GET does.")
    async def update_item(self, request: Request, item_id: str):
        self._auth(request)
        self._limit(request)
        body = await _json_object(request)
        if not body or set(body) - {"attributes", "title"}:
            raise InvalidInput(f"give {{\"attributes\": [tokens], \"title\": \"...\"}} (either or both), got {body!r}")
        attributes, title = body.get("attributes"), body.get("title")
        if attributes is not None and (not isinstance(attributes, list) or len(attributes) > MAX_ITEM_TOKENS):
            raise InvalidInput(f"attributes are a list of at most {MAX_ITEM_TOKENS} tokens, got {attributes!r}")
        if title is not None and (not isinstance(title, str) or not title.strip() or len(title) > 1000):
            raise InvalidInput("title must be 1..1000 characters")
        if attributes is not None:
            attributes = list(await self._tokens(attributes))
        got = await submit(self.coordinator.update, parse_id(item_id), attributes,   # runs to its end even if
                           {"title": title} if title is not None else None)          # the client goes away
        self.metrics.written("update")
        return _item(got)

    @app.get("/items/{item_id}/similar", summary="Catalog items that look like this one (no photo needed)",
             description="The item's own code and colour are the query; its category and gender are required "
                         "(gender relaxed first when too few items carry both), its other tokens add to a "
                         "hit's score (models/similar.py). `filters` (comma-separated tokens) are hard "
                         "constraints, as on /search. The item itself is left out.",
             responses=READ_ERRORS)
    async def similar(self, request: Request, item_id: str, k: str = "20", filters: str | None = None):
        from models.similar import similar_query, without_item
        self._limit(request)
        k_val, filt = parse_k(k), await self._tokens(parse_tokens(filters))
        item = await submit(self.coordinator.get, parse_id(item_id))
        [r] = await self.router.search_batch([similar_query(item, k_val, self.w_colour, filt)])
        return {"id": item["id"], "attributes": item["attributes"],
                "results": [_hit(h) for h in without_item(r.hits, item["id"], k_val)],
                "relaxed": list(r.relaxed), "partial": bool(r.missing), "missing_shards": sorted(r.missing),
                "candidates": r.candidates}

    @app.get("/items/{item_id}/image", responses=READ_ERRORS,
             description="The item's photo as a browser shows it: as stored where browsers show its format, "
                         "else (HEIC, TIFF) as a JPEG. `max_side`: a JPEG of at most that many pixels a side "
                         "for a bigger photo (a results page's tiles).")
    async def item_image(self, request: Request, item_id: str, max_side: str | None = None):
        side = None if max_side is None else parse_count(max_side, "max_side", MAX_PHOTO_SIDE)
        got = await submit(self.coordinator.get, parse_id(item_id))
        recorded = got["meta"].get("image")
        path = photo_path(recorded, self.root) if recorded else None
        try:
            version = etag(path, side) if path is not None and path.is_file() else None
        except OSError:         # gone between the two looks
            version = None
        if version is None:
            raise HttpError(404, "this item has no stored image")
        # a browser that has this version is told so (304): a page of tiles shown again costs nothing
        cache = {"ETag": version, "Cache-Control": "no-cache"}
        if version in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=cache)
        # decoding a big photo takes a while: off the loop that answers the other requests
        shown, media_type = await asyncio.to_thread(lambda: for_browser(path.read_bytes(), side))
        return Response(shown, media_type=media_type, headers=cache)

    @app.delete("/items/{item_id}", responses=WRITE_ERRORS)
    async def delete_item(self, request: Request, item_id: str):
        self._auth(request)
        existed, photo = await self._lookup(parse_id(item_id))
        n = await run_to_end(self._delete_item(parse_id(item_id), photo))
        # n counts what the owner shard deleted in the try that answered: a try whose answer was lost
        # to a shard restart may have deleted it already, and the retry finds nothing. The item is gone
        # either way; it is 404 only if it was not there before.
        if not n and not existed:
            raise HttpError(404, f"no item with id {item_id!r}")
        self.metrics.written("delete")
        return {"deleted": item_id}

    async def _delete_item(self, item_id, photo: Path | None) -> int:
        n = await submit(self.coordinator.delete, [item_id])
        if photo is not None:
            photo.unlink(missing_ok=True)     # after the delete is durable, never before
        return n

    async def _uploaded_image(self, item_id) -> Path | None:
        """The stored photo of an item added through POST /items (not a catalog's own file), if any."""
        return (await self._lookup(item_id))[1]

    async def _lookup(self, item_id) -> tuple[bool, Path | None]:
        """Whether the item is indexed, and its photo if it was added through POST /items."""
        try:
            got = await submit(self.coordinator.get, item_id)
        except Exception as exc:
            if _is(exc, NotFound):
                return False, None
            raise
        name = upload_name(got["meta"].get("image", ""))
        return True, (self.uploads / name if name else None)

    @app.get("/stats", responses=READ_ERRORS)
    async def stats(self):
        st = await submit(self.coordinator.stats)
        try:
            app_status = serve.status().applications.get("fashion-search")
            st["replicas"] = {name: len(getattr(d, "replica_states", {}) or {}) or d.status
                              for name, d in app_status.deployments.items()} if app_status else {}
        except Exception as exc:  # status is a nicety; the counts above are what matters
            st["replicas"] = {"error": str(exc)}
        import psutil
        st["memory"] = {"frontend_rss_bytes": psutil.Process().memory_info().rss}
        return st

    @app.post("/admin/rebalance", responses=WRITE_ERRORS)
    async def rebalance(self, request: Request):
        self._auth(request)
        body = await _json_object(request)
        shards = body.get("shards")
        if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= 256 or set(body) - {"shards"}:
            raise InvalidInput(f"body must be {{\"shards\": N}} with N in [1, 256], got {body!r}")
        report = await submit(self.coordinator.rebalance, shards)
        await self._refresh()
        return report

    @app.post("/admin/backup", responses=WRITE_ERRORS,
              summary="Copy the storage root into a new folder on the cluster's storage, writes paused meanwhile")
    async def backup(self, request: Request):
        """`fashion-search backup` (deploy/README.md): `{"dest": "/absolute/new/folder"}`, a folder the
        coordinator's node can write that does not exist yet; the answer says what was copied."""
        self._auth(request)
        body = await _json_object(request)
        dest = body.get("dest")
        if not isinstance(dest, str) or not dest.startswith("/") or set(body) - {"dest"}:
            raise InvalidInput(f"body must be {{\"dest\": \"/absolute/new/folder\"}}, got {body!r}")
        return await submit(self.coordinator.backup, dest)

    @app.post("/admin/check", responses=WRITE_ERRORS,
              summary="Is the storage root, or a backup of it, whole and consistent? (read-only)")
    async def check(self, request: Request):
        """`fashion-search check` (deploy/README.md): `{}` checks the root this cluster serves, `{"path":
        "/absolute/backup"}` a backup. The answer is the report; `ok` is false when it found a problem."""
        self._auth(request)
        body = await _json_object(request)
        path = body.get("path", str(self.root))
        if not isinstance(path, str) or not path.startswith("/") or set(body) - {"path"}:
            raise InvalidInput(f"body must be {{}} or {{\"path\": \"/absolute/folder\"}}, got {body!r}")
        return await submit(_check_root, path)

    @app.post("/admin/prune-uploads", responses=WRITE_ERRORS,
              summary="Remove uploaded photos that no item records (after reading the whole catalog)")
    async def prune(self, request: Request):
        """`fashion-search prune-uploads` (deploy/README.md): `{"min_age_hours": 1, "dry_run": false}`, both
        optional. A shard that does not answer stops it before anything is removed (503)."""
        self._auth(request)
        body = await _json_object(request)
        hours, dry_run = body.get("min_age_hours", 1.0), body.get("dry_run", False)
        if (set(body) - {"min_age_hours", "dry_run"} or not isinstance(dry_run, bool)
                or isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 <= hours <= 24 * 365):
            raise InvalidInput(f"body must be {{\"min_age_hours\": H (0 to 8760), \"dry_run\": true|false}}, "
                               f"both optional; got {body!r}")
        from coordinator.listing import every_item
        from .prune_uploads import prune_uploads

        def list_page(cursor, limit):
            return ray.get(submit(self.coordinator.list_items, cursor, limit, ()))
        # the catalog is paged through with blocking calls: in a thread, off the loop that answers requests
        return await asyncio.to_thread(prune_uploads, every_item(list_page), self.root, hours * 3600, dry_run)


def build_app(settings: Settings):
    """The Serve application: three model deployments and the front."""
    from .model_replicas import AttributeReplica, FeatureReplica, RoiReplica, replica_options
    opts = replica_options()
    n = settings.replicas
    attributes = AttributeReplica.options(num_replicas=n, ray_actor_options=opts).bind()
    roi = RoiReplica.options(num_replicas=1, ray_actor_options=opts).bind()
    features = FeatureReplica.options(num_replicas=n, ray_actor_options=opts).bind()
    from dataclasses import asdict
    return Frontend.bind(attributes, roi, features, asdict(settings))
