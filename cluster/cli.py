"""`fashion-search`: the command line of the cluster.

    fashion-search demo                                                       the main job: sample catalog + web page
    fashion-search serve | index | batch | query                              run, fill, and ask a cluster
    fashion-search train | eval                                               the models
    fashion-search bench scan|filtered|memory|ingest|cluster|rebalance ...   benchmarks (JSON)
    fashion-search rebalance --storage DIR --shards N                        move buckets online
    fashion-search stats --storage DIR                                       what the storage root holds
    fashion-search backup DEST --storage DIR                                 copy the root, online
    fashion-search similar-items --out FILE --storage DIR [--resume]        every item's similar items
    fashion-search export --out FILE --storage DIR                          every item, one JSON line each
    fashion-search prune-uploads --storage DIR [--dry-run]                  remove photos no item records
    fashion-search chaos                                                      faults under load, nothing lost

Every subcommand has --help. Errors of ours become one line on stderr and exit 2; Ctrl-C exits 130,
SIGTERM 143 (`demo` and `serve` stop cleanly on either and exit 0).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from shards.errors import FashionSearchError, InvalidInput

DEFAULT_STORAGE = "./fashion-search-data"


def _open(storage, **kwargs):
    """open_cluster, after which SIGTERM stops the command as Ctrl-C does (cluster/stopping.py)."""
    from cluster.runtime import open_cluster
    from cluster.stopping import stop_on_sigterm
    c = open_cluster(storage, **kwargs)
    stop_on_sigterm()
    return c


def number(kind=int, lo=None, hi=None, *, above: bool = False, below: bool = False):
    """An argparse type: a number in [lo, hi] (or (lo, ...) with above, (..., hi) with below),
    so a bad value is a usage error before anything starts, not a traceback mid-run."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        too_low = lo is not None and (v <= lo if above else v < lo)
        too_high = hi is not None and (v >= hi if below else v > hi)
        if not math.isfinite(v) or too_low or too_high:
            if hi is None:
                want = f"{'above' if above else 'at least'} {lo}"
            else:
                want = f"in {'(' if above else '['}{lo}, {hi}{')' if below else ']'}"
            raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
        return v
    return parse


COUNT = number(int, 1)                    # epochs, shards, rows, ...
FRACTION = number(float, 0.0, 1.0)
POSITIVE = number(float, 0.0, above=True)
PORT = number(int, 1, 65535)


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value:.4g}" if isinstance(value, float) else f"{key:>28}: {value}")


def cmd_bench(args) -> dict:
    from benchmarks import shard_bench
    if args.what == "scan":
        return shard_bench.bench_scan(args.rows, args.bits)
    if args.what == "filtered":
        return shard_bench.bench_filtered(args.rows, args.selectivity, args.bits)
    if args.what == "memory":
        return shard_bench.bench_memory(args.rows, args.bits)
    if args.what == "ingest":
        return shard_bench.bench_ingest(args.rows, args.bits)
    if args.what == "soak":
        from benchmarks import soak_bench
        return soak_bench.bench_soak(args.minutes, args.rate, log=lambda s: print(s, file=sys.stderr, flush=True))
    if args.what == "photos":
        from benchmarks import photo_bench
        return photo_bench.bench_photos()
    if args.what in ("serve", "inference"):
        from benchmarks import serve_bench
        if args.what == "serve":
            return serve_bench.bench_serve(roi=args.roi, phone=args.phone_photos)
        return serve_bench.bench_inference()
    from benchmarks import cluster_bench
    if args.what == "cluster":
        return cluster_bench.bench_cluster(args.rows, args.shards, args.bits)
    if args.what == "rebalance":
        return cluster_bench.bench_rebalance(args.rows, args.from_shards, args.to_shards, args.bits)
    if args.what == "similar":
        return cluster_bench.bench_similar(args.rows, args.shards, args.bits)
    if args.what == "export":
        return cluster_bench.bench_export(args.rows, args.shards, args.bits)
    raise AssertionError(args.what)


def existing_placement(args):
    """The placement map of the cluster an admin command acts on; without --address, a storage root
    that holds no cluster is an error (a mistyped path must not start a new, empty cluster)."""
    from pathlib import Path
    from coordinator.placement import Placement
    placement = Placement.load(Path(args.storage))
    if placement is None and not args.address:
        raise InvalidInput(f"no cluster at {Path(args.storage).resolve()} (no placement map there); "
                           "`fashion-search index` or `demo` makes one, --storage names another")
    return placement


def cmd_rebalance(args) -> dict:
    from coordinator.placement import check_shard_count
    placement = existing_placement(args)
    if placement is not None:
        check_shard_count(args.shards, placement.n_buckets)   # before Ray starts
    with _open(args.storage, address=args.address) as c:
        return c.coordinator_call("rebalance", args.shards)


def cmd_stats(args) -> dict:
    existing_placement(args)
    with _open(args.storage, address=args.address) as c:
        st = c.coordinator_call("stats")
    # for a monitor: exit 1 while a shard does not answer or a rebalance waits to be finished
    st["ok"] = not st["unavailable"] and not st.get("recovery_error")
    return st


def cmd_backup(args) -> dict:
    from cluster.backup import check_destination
    existing_placement(args)
    dest = check_destination(args.storage, args.dest)   # before Ray starts
    with _open(args.storage, address=args.address) as c:
        return c.backup(dest)


def cmd_check(args) -> dict:
    from cluster.check import check_root
    return check_root(args.storage)


def cmd_similar_items(args) -> dict:
    from cluster.new_file import check_new_file
    from models.data import ASSETS
    from models.features import colour_weight
    existing_placement(args)
    out = check_new_file(args.out)   # before Ray starts
    with _open(args.storage, codes_photos=True, address=args.address) as c:
        return c.similar_items(out, args.k, colour_weight(ASSETS / "features.pt"),
                               log=lambda s: print(s, file=sys.stderr, flush=True), resume=args.resume)


def cmd_export(args) -> dict:
    from cluster.new_file import check_new_file
    existing_placement(args)
    out = check_new_file(args.out)   # before Ray starts
    with _open(args.storage, address=args.address) as c:
        return c.export(out, log=lambda s: print(s, file=sys.stderr, flush=True), resume=args.resume)


def cmd_prune_uploads(args) -> dict:
    existing_placement(args)
    with _open(args.storage, address=args.address) as c:
        return c.prune_uploads(args.min_age_hours * 3600, args.dry_run)


def cmd_train(args) -> dict:
    from pathlib import Path
    if args.what == "text":
        from models.text_pipeline import train_and_save_text
        return train_and_save_text(Path(args.out) if args.out else None, epochs=args.epochs or 15)
    if args.what == "detector":
        from models.data import SHIPPED
        from models.train_detector import train_detector
        rep = train_detector(Path(args.out or SHIPPED / "detector.pt"), epochs=args.epochs or 8, lr=args.lr,
                             paste=args.paste, init=Path(args.init) if args.init else None,
                             scales=tuple(int(v) for v in args.scales.split(",")) if args.scales else (),
                             repeat_threshold=args.repeat_threshold, pyramid=args.pyramid,
                             log=lambda s: print(s, file=sys.stderr, flush=True))
        return {"weights": rep["weights"], "classes": rep["classes"], "final_loss": rep["history"][-1]["loss"]}
    if args.what == "googlenet":
        from models.train_googlenet import GoogLeNetTrainConfig, train_googlenet
        cfg = GoogLeNetTrainConfig(image_size=args.image_size or 128, epochs=args.epochs or 12, batch=args.batch,
                                   lr=args.lr, crop=args.crop or 0.7, seed=args.seed)
        rep = train_googlenet(Path(args.out or "runs/googlenet"), cfg, limit=args.limit,
                              log=lambda s: print(s, file=sys.stderr, flush=True))
        return {"checkpoint": rep["checkpoint"], **rep["history"][-1]}
    if args.what == "features":
        from models.train_features import fit_codebook
        return fit_codebook(bits=args.bits, image_size=args.image_size or 160, instance_views=args.instance_views,
                            category_weight=args.category_weight, epochs=args.epochs or 20,
                            backbone=args.backbone, trunk=args.trunk, out=Path(args.out) if args.out else None,
                            log=lambda s: print(s, file=sys.stderr, flush=True))
    from models.attributes import AttributeConfig, EncoderConfig
    from models.train_attributes import train_attributes
    enc = EncoderConfig(kind=args.encoder, image_size=args.image_size or 128, width=args.width,
                        frozen_blocks=args.frozen_blocks)
    out = Path(args.out or f"runs/attributes-{args.encoder}")
    cfg = AttributeConfig(encoder=enc, label_smoothing=args.label_smoothing)
    report = train_attributes(cfg, out, epochs=args.epochs or 6, batch=args.batch, lr=args.lr, seed=args.seed,
                              limit=args.limit, hard=args.hard, hard_reps=args.hard_views, crop=args.crop,
                              init=Path(args.init) if args.init else None, device=_train_device(args.device),
                              workers=args.workers, average=args.average,
                              log=lambda s: print(s, file=sys.stderr, flush=True))
    return {"checkpoint": report["checkpoint"], "epochs": len(report["history"]),
            "val_nll": report.get("average", report["history"][-1])["val_nll"], "curves": str(out / "curves.png")}


def _train_device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("--device cuda: this machine has no GPU that torch can use")
    return name


def cmd_eval(args) -> dict:
    from models.evaluation_cli import eval_attributes, eval_text
    whole_pipeline = args.what in ("instances", "street", "retrieval")
    if args.title_words and args.what != "attributes":
        raise InvalidInput("--title-words is for eval attributes")
    if whole_pipeline and args.weights:
        raise InvalidInput(f"eval {args.what} reads a whole model folder: give --assets DIR, not --weights")
    if not whole_pipeline and args.assets:
        raise InvalidInput(f"eval {args.what} reads one weights file: give --weights FILE, not --assets")
    if args.what == "text":
        return eval_text(args.data, args.split, args.weights)
    if args.what == "roi":
        from pathlib import Path
        from models.data import SHIPPED
        from models.detector import load_detector
        from models.train_detector import evaluate_detector
        det = load_detector(Path(args.weights) if args.weights else SHIPPED / "detector.pt")
        return evaluate_detector(det, Path(args.data) if args.data else None, args.split)
    if whole_pipeline:
        return _eval_through_pipeline(args)
    return eval_attributes(args.data, args.split, args.weights, beam=args.beam, limit=args.limit,
                           title_words=args.title_words)


def _eval_through_pipeline(args) -> dict:
    """The evaluations that load a whole model folder (--assets), as the query path does."""
    from pathlib import Path
    assets = Path(args.assets) if args.assets else None
    if assets is not None:
        missing = [n for n in ("text.pt", "attributes.pt", "features.pt") if not (assets / n).is_file()]
        if missing:
            raise InvalidInput(f"--assets {assets}: a model folder needs {', '.join(missing)} (as models/assets/ has)")
    log = lambda s: print(s, file=sys.stderr, flush=True)     # noqa: E731  progress on stderr, the report on stdout
    if args.what == "instances":
        from models.instance_eval import instance_recall
        return instance_recall(args.data, n_queries=args.limit or 200, split=args.split or "test", assets=assets,
                               log=log)
    if args.what == "street":
        from models.street_eval import street_recognition
        return street_recognition(args.data, args.limit, assets=assets)
    from models.train_features import eval_retrieval
    return eval_retrieval(args.data, args.limit, args.split, log=log, assets=assets)


def cmd_chaos(args) -> dict:
    import tempfile
    from cluster.chaos import run_chaos
    import contextlib
    storage = args.storage or tempfile.mkdtemp(prefix="fashion-chaos-")
    with contextlib.redirect_stdout(sys.stderr):     # Ray's own messages; stdout is for the report
        return run_chaos(storage, settle_s=args.settle, warmup_s=args.warmup,
                         log=lambda s: print(s, file=sys.stderr, flush=True))


def cmd_demo(args) -> dict:
    from cluster.demo import demo_settings, run_demo
    return run_demo(demo_settings(args.host, args.port, args.storage, args.api_key), shards=args.shards)


def cmd_serve(args) -> dict:
    import time

    import ray
    from cluster.demo import SAMPLE_QUERIES, start_server
    from cluster.demo import check_port_free, serve_environment
    from cluster.settings import Settings
    from coordinator.placement import N_BUCKETS, check_shard_count
    check_shard_count(args.shards, N_BUCKETS)
    if not args.address:   # a local Ray: Serve's proxy listens on this machine
        check_port_free(args.host, args.port)
    serve_environment()
    settings = Settings(storage=args.storage, samples=str(SAMPLE_QUERIES), host=args.host, port=args.port,
                        api_key=args.api_key)
    from pathlib import Path
    from coordinator.placement import Placement
    root = Path(args.storage).resolve()
    new = Placement.load(root) is None and not args.address
    cluster = _open(args.storage, codes_photos=True, address=args.address, shards=args.shards)
    start_server(settings)
    # a mistyped --storage starts a new, empty catalog: say which catalog this is
    catalog = (f"a new, empty catalog at {root} (`fashion-search index` or POST /items fills it)" if new
               else f"{cluster.stats()['items']} items from {root}")
    print(f"serving {catalog} on http://{args.host}:{args.port}/ "
          f"(writes {'need X-API-Key' if args.api_key else 'are off'})", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        cluster.close()   # a Ray it started stops, and gives the storage root up
        ray.shutdown()
    return {}


def cmd_index(args) -> dict:
    from pathlib import Path
    from cluster.catalog_lines import is_catalog_lines
    from cluster.indexing import index_catalog, read_catalog
    from coordinator.placement import N_BUCKETS, check_shard_count
    check_shard_count(args.shards, N_BUCKETS)
    rows = read_catalog(args.catalog, args.images)   # a bad catalog fails here, before Ray starts or storage is made
    read = [p for p in rows if p.attributes is None]     # the rest give their attributes
    if read and not any(p.title for p in read):
        print(f"warning: no row of {args.catalog} has a title (a productDisplayName or title column, or a "
              "line's title); each item's category is read from its photo alone", file=sys.stderr, flush=True)
    if args.dry_run:
        existing_placement(args)    # a dry run makes no cluster
    with _open(args.storage, codes_photos=not args.dry_run, address=args.address, shards=args.shards) as c:
        errors = args.errors or str(Path(args.storage) / "index-errors.jsonl")    # the root exists by now
        return index_catalog(c, rows, errors_path=errors, concurrency=args.concurrency,
                             log=lambda s: print(s, file=sys.stderr, flush=True), sync=args.sync,
                             max_delete=args.max_delete, dry_run=args.dry_run,
                             uploads_too=is_catalog_lines(args.catalog))


def cmd_batch(args) -> dict:
    from pathlib import Path
    from cluster.batch import read_queries, resume_point, run_batch, submit_job
    if Path(args.queries).exists() or not args.address:
        rows = read_queries(args.queries)  # a malformed file fails here, before Ray starts or a job is submitted
        if args.resume:
            resume_point(args.out, rows)   # and results that do not answer these queries
    if args.address and not args.in_process:
        # absolute paths: the job runs in another working directory, on a node that sees the same storage
        absolute = [str(Path(x).resolve()) for x in (args.queries, args.out, args.storage)]
        argv = ["batch", absolute[0], "--out", absolute[1], "--k", str(args.k), "--storage", absolute[2]]
        argv += ["--concurrency", str(args.concurrency)] if args.concurrency else []
        try:
            return submit_job(args.address, argv + ["--resume"] * args.resume)
        except ConnectionError as exc:     # a cluster without Ray's job API: `demo` starts one with no dashboard
            if not Path(args.queries).exists():
                raise InvalidInput(f"cannot submit the job to {args.address}: {exc}; the cluster has no job API "
                                   "(Ray's dashboard is off there), and the queries file is not on this "
                                   "machine to run the job from here") from exc
            print(f"fashion-search: the cluster at {args.address} has no job API (Ray's dashboard is off "
                  "there): the batch runs from this process, attached to that cluster", file=sys.stderr, flush=True)
            args.in_process = True
    if not Path(args.out).resolve().parent.is_dir():    # said before Ray starts and the models load
        raise InvalidInput(f"no folder {Path(args.out).resolve().parent} to write {Path(args.out).name} in")
    existing_placement(args)      # searching a storage root with no cluster would answer nothing, silently
    with _open(args.storage, codes_photos=True, address=args.address if args.in_process else None) as c:
        return run_batch(c, rows, args.out, k=args.k, log=lambda s: print(s, file=sys.stderr, flush=True),
                         resume=args.resume, concurrency=args.concurrency)


def cmd_query(args) -> dict:
    import httpx
    from pathlib import Path
    data = {"k": str(args.k)}
    if args.category:
        data["category"] = args.category
    if args.box:
        data["box"] = args.box
    if args.roi:
        data["roi"] = args.roi
    try:
        photo = Path(args.image).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {args.image}: {exc.strerror or exc}") from exc
    try:
        r = httpx.post(args.url.rstrip("/") + "/search", files={"image": (Path(args.image).name, photo, "image/jpeg")},
                       data=data, timeout=60)
    except httpx.ConnectError as exc:
        raise InvalidInput(f"no server answers at {args.url} ({exc}); `fashion-search demo` or `serve` "
                           "starts one, --url names another") from exc
    except httpx.HTTPError as exc:   # it timed out, or the connection broke
        raise InvalidInput(f"cannot send {args.image} to {args.url}: {exc}") from exc
    try:
        body = r.json()
    except ValueError:
        raise InvalidInput(f"{args.url} answered {r.status_code} with no JSON: {r.text[:200]!r}") from None
    if r.status_code != 200:
        raise InvalidInput(f"server answered {r.status_code}: {body.get('error')}")
    if args.json:
        return body
    print(f"category {body['category']} ({body['category_source']}), ROI {body['roi']} ({body['roi_source']})")
    print("attributes: " + " ".join(f"#{a['token'].split('=')[1]}({a['probability']:.2f})" for a in body["attributes"]))
    for h in body["results"]:
        print(f"  {h['score']:.3f}  {h['id']}  {h.get('title', '')}")
    return {}


def _cluster_arguments(parser) -> None:
    """What every admin command on an existing cluster takes: where it is, and JSON output."""
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="storage root (a path every node can read)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    parser.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fashion-search", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="benchmarks of the shard and the cluster; print JSON with --json",
                       description="Benchmarks. Results and the commands that made them: benchmarks/RESULTS.md")
    b.add_argument("what", choices=["scan", "filtered", "memory", "ingest", "cluster", "rebalance", "serve",
                                    "inference", "photos", "soak", "similar", "export"],
                   help="scan: unfiltered Hamming top-10 vs faiss; filtered: category-filtered query vs faiss "
                        "with an ID selector; memory: resident bytes per item; ingest: upserts/s with the "
                        "log fsync'd, and reopen time; cluster: Ray cluster vs in-process latency and batch "
                        "throughput; rebalance: move buckets while a client queries; serve: POST /search against the "
                        "demo with 1 and 4 clients; inference: the query path's models on this CPU; photos: reading a "
                        "phone's 12 Mpixel photo for them, whole or at reduced scale; soak: the demo "
                        "under a steady rate of mixed reads and writes for --minutes (errors, p99, RSS drift); "
                        "similar: `similar-items` over --rows synthetic items on --shards shards; export: "
                        "`export` (and GET /items's first page) over --rows synthetic items on --shards shards")
    b.add_argument("--rows", type=COUNT, default=1_000_000, help="catalog items (default 1,000,000)")
    b.add_argument("--bits", type=number(int, 64), default=256, help="code length in bits (default 256)")
    b.add_argument("--selectivity", type=number(float, 0.0, 1.0, above=True), default=0.01,
                   help="filtered: fraction of the catalog in the query's category (default 0.01)")
    b.add_argument("--shards", type=COUNT, default=4, help="cluster: number of shard actors (default 4)")
    b.add_argument("--from", dest="from_shards", type=COUNT, default=2, help="rebalance: shards before")
    b.add_argument("--to", dest="to_shards", type=COUNT, default=4, help="rebalance: shards after")
    b.add_argument("--minutes", type=POSITIVE, default=10.0, help="soak: how long (default 10)")
    b.add_argument("--rate", type=POSITIVE, default=3.0, help="soak: requests per second (default 3)")
    b.add_argument("--phone-photos", action="store_true",
                   help="serve: the street photos enlarged to 4032 px and saved as a phone saves them (JPEG, "
                        "Display P3 profile)")
    b.add_argument("--roi", choices=["detector", "match"], default="detector",
                   help="serve: the ROI rule the queries ask for (POST /search roi=...; default detector)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("rebalance", help="add or remove shards and move buckets to them, online",
                       description="Resize the cluster to N shards. Buckets move one at a time: copied, "
                                   "double-written while they move, switched in the placement map, then "
                                   "deleted from the old shard. Queries see each item exactly once throughout.")
    r.add_argument("--shards", type=COUNT, required=True, help="number of shards afterwards")
    r.add_argument("--storage", default=DEFAULT_STORAGE, help="storage root (a path every node can read)")
    r.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_rebalance)

    t = sub.add_parser("train", help="train the title classifier or the attribute model",
                       description="Train on the shared product data (models/assets/splits.json). Checkpoints "
                                   "carry their config; a run resumes from OUT/last.pt.")
    t.add_argument("what", choices=["text", "attributes", "detector", "features", "googlenet"],
                   help="features: fit the binary code book on the catalog and report retrieval figures; "
                        "googlenet: train torchvision's GoogLeNet on the catalog's fields, a trunk for "
                        "`train features --backbone googlenet`")
    t.add_argument("--bits", type=number(int, 64), default=256, help="features: code length")
    t.add_argument("--instance-views", type=number(int, 0), default=2,
                   help="features: hard views per training photo for the learnt projection (0: plain PCA + ITQ)")
    t.add_argument("--category-weight", type=number(float, 0.0), default=0.03,
                   help="features: weight of the same-category term beside the instance term")
    t.add_argument("--backbone", default="efficientnet_lite0", choices=["efficientnet_lite0", "googlenet"],
                   help="features: the network whose two pooled stages make the code")
    t.add_argument("--trunk", default=None,
                   help="features, googlenet: the trunk's weights, a `train googlenet` checkpoint (OUT/last.pt) "
                        "or `imagenet` (torchvision's file in torch's hub cache; nothing is downloaded)")
    t.add_argument("--paste", type=FRACTION, default=0.0,
                   help="detector: fraction of street photos that get a training-split catalog photo pasted on")
    t.add_argument("--scales", default=None,
                   help="detector: short sides drawn at random per batch, e.g. 256,288,320,352,384 (multi-scale)")
    t.add_argument("--repeat-threshold", type=FRACTION, default=0.0,
                   help="detector: repeat-factor sampling, photos of classes in fewer than this fraction of "
                        "photos come more often (e.g. 0.1; 0: off)")
    t.add_argument("--pyramid", action="store_true",
                   help="detector: a stride-8 level for small things and a top-down from stride 32 "
                        "(warm-started from a single-level --init)")
    t.add_argument("--init", default=None,
                   help="detector, attributes: fine-tune these trained weights (attributes: their config too)")
    t.add_argument("--hard", type=FRACTION, default=0.0,
                   help="attributes: fraction of each batch replaced by hard views (pasted on street photos, "
                        "cropped at a jittered box)")
    t.add_argument("--hard-views", type=COUNT, default=2,
                   help="attributes: hard views made (and cached) per training photo")
    t.add_argument("--average", action="store_true",
                   help="attributes: keep the learning rate at --lr and make the model the mean of the weights "
                        "taken every half epoch (stochastic weight averaging), written to OUT/average.pt")
    t.add_argument("--label-smoothing", type=number(float, 0.0, 1.0, below=True), default=0.0,
                   help="attributes: label smoothing of the sequence loss (ignored with --init: the weights' own)")
    t.add_argument("--crop", type=number(float, 0.0, 1.0, below=True), default=0.0,
                   help="attributes, googlenet: zoom each training image into a random square of at least this "
                        "fraction of its side (attributes: 0, no crops; googlenet: 0.7 unless given)")
    t.add_argument("--out", default=None, help="output folder (attributes, googlenet) or weights file (text, "
                                               "detector, features; default: the shipped one)")
    t.add_argument("--encoder", default="efficientnet_lite0", choices=["efficientnet_lite0", "resception", "inception"])
    t.add_argument("--image-size", type=number(int, 32), default=None,
                   help="side of the square training images (attributes, googlenet: 128; features: 160)")
    t.add_argument("--width", type=POSITIVE, default=0.25, help="inception family: channel multiplier")
    t.add_argument("--frozen-blocks", type=number(int, 0), default=6, help="efficientnet: leading blocks kept frozen")
    t.add_argument("--epochs", type=COUNT, default=None)
    t.add_argument("--batch", type=COUNT, default=64)
    t.add_argument("--lr", type=POSITIVE, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=COUNT, default=None, help="train on the first N items only (smoke runs)")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="attributes: where to train (auto: the GPU when torch sees one)")
    t.add_argument("--workers", type=COUNT, default=1, help="attributes: processes that make the hard views")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="measure recognition: attributes (precision/recall) or text (accuracy)",
                       description="Evaluate on every item of a catalog folder (styles.csv + images/), or "
                                   "with --split test on the held-out split of the shared data.")
    e.add_argument("what", choices=["text", "attributes", "roi", "retrieval", "instances", "street"],
                   help="roi: the detector's mAP, non-guided and guided (COCO folder); retrieval: mAP of codes; "
                        "instances: recall@1/@10 of the source product for catalog photos made hard and pasted "
                        "on street photos, through the whole query path and a real shard (--limit queries); "
                        "street: is the category read in a street photo among its tags (ccp-tags format folder)")
    e.add_argument("--data", default=None, help="catalog folder (default: the shared fashion-products)")
    e.add_argument("--split", default=None, choices=["train", "val", "test"])
    e.add_argument("--weights", default=None, help="text, attributes, roi: weights file (default: the shipped ones)")
    e.add_argument("--assets", default=None,
                   help="retrieval, instances, street: a model folder laid out as models/assets/ (text.pt, "
                        "attributes.pt, features.pt, detector.pt), e.g. to measure another features file "
                        "(default: models/assets/, or FASHION_ASSETS)")
    e.add_argument("--beam", type=COUNT, default=3)
    e.add_argument("--limit", type=COUNT, default=None)
    e.add_argument("--title-words", type=COUNT, default=None,
                   help="attributes: cut each title to its first N words, as a shop's short titles are")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="the main job: a local cluster, the sample catalog, the web page on :8000",
                       description="Starts a local Ray, indexes the sample catalog shipped in demo/ with the "
                                   "shipped models, serves the REST API and the web page, prints the URL and a curl.")
    d.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    d.add_argument("--port", type=PORT, default=8000)
    d.add_argument("--storage", default="./demo-data", help="storage root (reused: indexed items are kept)")
    d.add_argument("--shards", type=COUNT, default=2)
    d.add_argument("--api-key", default=None, help="key for writes (default: a random one, printed)")
    d.set_defaults(func=cmd_demo)

    sv = sub.add_parser("serve", help="serve the REST API over a cluster and storage root",
                        description="Attach to a Ray cluster (--address) or start a local one, and serve.")
    sv.add_argument("--address", default=None)
    sv.add_argument("--storage", default=DEFAULT_STORAGE)
    sv.add_argument("--shards", type=COUNT, default=4, help="shards, if the storage root is new")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=PORT, default=8000)
    sv.add_argument("--api-key", default=None, help="key for writes and admin calls (none: they answer 403)")
    sv.set_defaults(func=cmd_serve)

    ix = sub.add_parser("index", help="index a catalog (CSV + images, or JSON lines) with Ray Data; resumable",
                        description="Read the catalog, run the models on an actor pool, write through the "
                                    "coordinator. Rows with missing or broken images go to the errors file. "
                                    "A .jsonl catalog (what `export` writes, or a feed of {id, title, image, "
                                    "attributes}) moves a catalog to new models: index it into a new storage "
                                    "root, with --images naming the root it came from (deploy/README.md).")
    ix.add_argument("--catalog", required=True,
                    help="styles.csv (or its folder, or a tab-separated .tsv; a row's photo is images/<id>.jpg "
                         "unless an image, image_link or image_url column names a path or an http(s) URL), or a "
                         ".jsonl file: "
                         "one item a line, its attributes "
                         "(when given) indexed as they are, its photo a path or an http(s) URL (fetched and "
                         "kept in the storage root)")
    ix.add_argument("--images", default=None,
                    help="images folder (default: images/ beside the CSV); for a .jsonl catalog, where its "
                         "relative photo paths start (default: its folder; for an export, the storage root "
                         "it came from)")
    ix.add_argument("--storage", default=DEFAULT_STORAGE, help="the cluster's storage root (made if new)")
    ix.add_argument("--address", default=None, help="a running Ray cluster (default: a local one)")
    ix.add_argument("--shards", type=COUNT, default=4, help="shards of a new cluster")
    ix.add_argument("--concurrency", type=COUNT, default=None,
                    help="model actors in the pool, one CPU each (default: one per CPU of the cluster)")
    ix.add_argument("--errors", default=None,
                    help="rows that could not be indexed, one JSON line each, appended (default: "
                         "index-errors.jsonl in the storage root)")
    ix.add_argument("--sync", action="store_true",
                    help="the CSV is the whole catalog: rows whose title or photo changed are indexed again, and "
                         "items no row names any more are deleted (not those added through POST /items, unless "
                         "the catalog is .jsonl, which names uploaded photos too; a line's changed attributes "
                         "also count)")
    ix.add_argument("--max-delete", type=number(float, 0.0, 1.0), default=0.1,
                    help="with --sync: refuse, before writing anything, to delete more than this share of the "
                         "catalog's items (default 0.1; a cut-short CSV would otherwise empty the index)")
    ix.add_argument("--dry-run", action="store_true",
                    help="say how many rows would be indexed (and, with --sync, which items deleted); write nothing")
    ix.add_argument("--json", action="store_true")
    ix.set_defaults(func=cmd_index)

    bt = sub.add_parser("batch", help="run a file of queries, write results as JSONL",
                        description="QUERIES: CSV (header: image[,category][,box][,filters]) or JSONL "
                                    "({\"image\": ...}) of photos, one query a row; a relative image path is "
                                    "read from the queries file's folder, an http(s) URL fetched; category "
                                    "names one (option 2), box is x,y,w,h (option 3), filters are hard tokens "
                                    "(gender=Women,usage=Sports). "
                                    "Each line of OUT answers its row, or says why it could not. "
                                    "With --address the job is submitted to the cluster (Ray job API); a "
                                    "cluster without one (the demo's) runs it from here, attached to it.")
    bt.add_argument("queries", help="the queries file (CSV or JSONL)")
    bt.add_argument("--out", required=True, help="where the answers go, one JSON line per query, in order")
    bt.add_argument("--k", type=number(int, 1, 1000), default=20, help="hits per query (default 20)")
    bt.add_argument("--concurrency", type=COUNT, default=None,
                    help="actors reading the photos, one CPU each, anywhere on the cluster "
                         "(default: one per CPU of the cluster)")
    bt.add_argument("--resume", action="store_true",
                    help="keep the answers OUT already holds for these queries (an interrupted job) and "
                         "search only the rest; without it OUT is written anew")
    bt.add_argument("--storage", default=DEFAULT_STORAGE, help="the cluster's storage root")
    bt.add_argument("--address", default=None, help="a running Ray cluster to submit the job to")
    bt.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    bt.add_argument("--json", action="store_true")
    bt.set_defaults(func=cmd_batch)

    q = sub.add_parser("query", help="ask a running server about a photo",
                       description="POST the image to a running server's /search and print the answer.")
    q.add_argument("image")
    q.add_argument("--url", default="http://127.0.0.1:8000")
    q.add_argument("--category", default=None, help="option 2: name the category")
    q.add_argument("--box", default=None, help="option 3: x,y,w,h of the item in the photo")
    q.add_argument("--roi", choices=("detector", "match"), default=None,
                   help="without --box: the detector's region (default) or the one the catalog matches best")
    q.add_argument("--k", type=number(int, 1, 200), default=10)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_query)

    s = sub.add_parser("stats", help="items per shard, placement map version, nodes",
                       description="Open the cluster on a storage root and print its state.")
    _cluster_arguments(s)
    s.set_defaults(func=cmd_stats)

    k = sub.add_parser("backup", help="copy the storage root into a new folder while the cluster serves",
                       description="Writes wait while the files are copied (queries go on), so the copy holds every "
                                   "write acknowledged before it began and none half-done. DEST appears only once "
                                   "whole (until then it is DEST.partial); it is a storage root: serve from it to "
                                   "restore. On several machines DEST must be a path the coordinator's node can "
                                   "write, as the storage root is (deploy/README.md).")
    k.add_argument("dest", help="a folder that does not exist yet, outside the storage root")
    _cluster_arguments(k)
    k.set_defaults(func=cmd_backup)

    ck = sub.add_parser("check", help="is a storage root, or a backup, whole and consistent? (read-only, no Ray)",
                        description="Opens every shard of the placement map read-only (no file changes) and "
                                    "reports: shards that cannot be read or whose recovery found damage, items "
                                    "lying in buckets the map gives to another shard, a backup's item count "
                                    "against its shards', uploaded photos that are missing, a rebalance left "
                                    "half-done. Exit 1 when it finds a problem. Best on a backup or a stopped "
                                    "cluster (deploy/README.md).")
    ck.add_argument("--storage", default=DEFAULT_STORAGE, help="the storage root or backup folder to check")
    ck.add_argument("--json", action="store_true")
    ck.set_defaults(func=cmd_check)

    m = sub.add_parser("similar-items", help="every catalog item's most similar items, one JSON line each",
                       description="What a shop computes ahead for its product pages: GET /items/{id}/similar for "
                                   "every item, read bucket by bucket from the shards and searched in batches. "
                                   "OUT appears only once whole (until then OUT.partial). Exit 1 if a shard did "
                                   "not answer some search (those lines say partial).")
    m.add_argument("--out", required=True, help="the JSONL file to write (must not exist)")
    m.add_argument("--k", type=number(int, 1, 999), default=12, help="similar items per item (default 12)")
    m.add_argument("--resume", action="store_true",
                   help="go on from where a stopped run got to (OUT.partial and OUT.progress), not from the start")
    _cluster_arguments(m)
    m.set_defaults(func=cmd_similar_items)

    e = sub.add_parser("export", help="every catalog item (id, attributes, meta), one JSON line each",
                       description="The catalog as the index holds it, to check against a shop's own records or to "
                                   "take elsewhere (GET /items pages through the same). Each item indexed before the "
                                   "export began and not deleted during it is written exactly once, rebalances "
                                   "included. OUT appears only once whole (until then OUT.partial).")
    e.add_argument("--out", required=True, help="the JSONL file to write (must not exist)")
    e.add_argument("--resume", action="store_true",
                   help="go on from where a stopped run got to (OUT.partial and OUT.progress), not from the start")
    _cluster_arguments(e)
    e.set_defaults(func=cmd_export)

    u = sub.add_parser("prune-uploads", help="remove photos in the root's uploads/ that no item records",
                       description="A write refused after its photo was stored keeps the photo, since the item may "
                                   "have landed. This removes the photos no item records, once older than "
                                   "--min-age-hours (past any write in flight), after reading the whole catalog; "
                                   "a shard that does not answer stops it before anything is removed.")
    u.add_argument("--min-age-hours", type=number(float, 0.0), default=1.0,
                   help="leave photos younger than this (default 1)")
    u.add_argument("--dry-run", action="store_true", help="count and name them, remove nothing")
    _cluster_arguments(u)
    u.set_defaults(func=cmd_prune_uploads)

    c = sub.add_parser("chaos", help="inject faults into a live 3-node cluster under a client's load; check nothing "
                       "acknowledged is lost",
                       description="Starts a head and two worker nodes (ray.cluster_utils.Cluster), the REST daemon "
                       "and a client that adds, deletes and searches; kills a shard actor, a model replica, a node, "
                       "the coordinator and the REST front, rebalances, then restarts everything from the storage "
                       "root. After each fault every acknowledged item must be found once. Exits 1 if not. "
                       "RELIABILITY.md records a run.")
    c.add_argument("--storage", default=None, help="a new, empty storage root (default: a temporary folder)")
    c.add_argument("--settle", type=number(float, 0.0), default=5.0,
                   help="seconds of load after each recovery (default 5)")
    c.add_argument("--warmup", type=number(float, 0.0), default=10.0, help="seconds of load before the first fault")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_chaos)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "address", None):
        _token_auth_where_a_token_is()
    try:
        result = args.func(args)
    except FashionSearchError as exc:
        print(f"fashion-search: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:   # Ctrl-C or SIGTERM: what was acknowledged is durable; no traceback
        from cluster.stopping import Terminated
        if isinstance(exc, Terminated):
            print("fashion-search: stopped (SIGTERM)", file=sys.stderr)
            return 143
        print("fashion-search: interrupted", file=sys.stderr)
        return 130
    _print(result, getattr(args, "json", False))
    return 1 if result.get("ok") is False else 0


def _token_auth_where_a_token_is() -> None:
    """Ray starts local clusters with token authentication, and a process attaching to one needs
    RAY_AUTH_MODE=token (deploy/README.md). Where this machine has a token and the user set no mode,
    attach with it: a cluster without authentication accepts such a process too. Before Ray is
    imported, which reads the mode once."""
    import os
    from pathlib import Path
    if "RAY_AUTH_MODE" in os.environ or "ray" in sys.modules:
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or Path(path).is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


if __name__ == "__main__":
    sys.exit(main())
