"""Benchmark: peak memory of fetching WikiArt paintings out of one real-layout parquet shard -> JSON.

    python bench/fetch_memory.py                          # one 1,131-row shard of ~460 kB images (~0.52 GB)
    python bench/fetch_memory.py --readers batches --rows 300 --out bench/results/fetch_memory_small.json

Builds, in a temporary folder, one shard laid out as huggan/wikiart's (``--rows`` rows, 1,131 by default: 81,444 rows
/ 72 shards; an Image struct column ``{bytes, path}`` of distinct JPEGs of ``--image-kb`` each, 460 by default:
shard 0 at commit d559852d holds 521,983,739 bytes in 1,132 rows; integer artist/genre/style labels, no class names
in the schema; written by pyarrow in one call as ``datasets``' push_to_hub did, so the first 1024 images share one
dictionary page and the rest are plain pages) and the repository's ``dataset_infos.json``; serves both from a local
HTTP server (a child process) that answers what ``huggingface_hub`` asks (revision, tree listing, ``/resolve/`` HEAD
with ``X-Repo-Commit`` / ``X-Linked-Etag`` / ``X-Linked-Size`` and a 302 to a CDN path on another origin, the body);
then, in a fresh child process per reader, runs ``pipeline.sources.wikiart.fetch_wikiart`` on it (download, checksum,
class names, selection, image extraction) and reports that process's resident memory: before the fetch (the imports:
no torch on the fetch path), the peak during it, and the difference, plus Arrow's peak allocation and the wall time.
Readers: ``batches`` is the code as it runs (``read_images``: the ``image.bytes`` column in batches of 16 rows, row
group by row group); ``row_group`` swaps in ``ParquetFile.read_row_group`` (each needed row group's image column
whole), to show what the batches save.

Measured before the switch to pyarrow (commit fe0d1f2, the hand-written page reader ``parquet_cells.py``, 1,131 rows,
556 MB): peak RSS 105.8 MB, +12.6 MB for the fetch; its pyarrow fallback (whole pages): 1,240.6 MB, +1,147.5 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REPO = "bench-org/wikiart-big"
SHA = "feedfacefeedfacefeedfacefeedfacefeedface"
SHARD = "data/train-00000-of-00001.parquet"
STYLES = ["Impressionism", "Cubism", "Post_Impressionism", "Ukiyo_e", "Baroque", "Expressionism"]


# ----------------------------------------------------------------------------------------- the shard


def _noise_jpegs(image_kb: int) -> list[bytes]:
    """Four noise JPEGs (seeded) of about ``image_kb`` kB each."""
    from PIL import Image

    rng = random.Random(0)
    bases = []
    for _ in range(4):  # a few noise JPEGs of about image_kb; each row appends its own bytes after the end marker
        side = 64
        while True:
            img = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            if buf.tell() >= image_kb * 1000 or side > 4096:
                break
            side = int(side * 1.25)
        bases.append(buf.getvalue())
    return bases


def _write_shard(shard: Path, rows: int, bases: list[bytes], infos: bytes) -> None:
    """Write ``rows`` rows of huggan/wikiart's columns to the parquet file ``shard``: row i's image is ``bases``'
    i mod 4 with i appended, its style cycling through 9 of the names in ``infos`` (6 of them asked for)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [{"bytes": bases[i % 4] + i.to_bytes(4, "little"), "path": f"{i}.jpg"} for i in range(rows)]
    names = json.loads(infos)["huggan--wikiart"]["features"]["style"]["names"]
    cycle = [names.index(s) for s in [*STYLES, "Realism", "Romanticism", "Symbolism"]]  # 6 of 9 rows are asked for
    table = pa.table(
        {
            "image": pa.array(images, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "artist": pa.array([i % 129 for i in range(rows)], pa.int64()),
            "genre": pa.array([i % 11 for i in range(rows)], pa.int64()),
            "style": pa.array([cycle[i % len(cycle)] for i in range(rows)], pa.int64()),
        }
    )
    pq.write_table(table, shard)  # one call, pyarrow's defaults


def _routes(folder: Path, shard: Path, infos: bytes) -> dict[str, dict]:
    """The routes the server answers (path -> file or redirect, with headers) for the Hub's listings of the repo,
    ``shard`` (redirected to a CDN path) and ``folder/dataset_infos.json``; writes the listings into ``folder``."""
    digest = hashlib.sha256()
    with open(shard, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    size = shard.stat().st_size
    infos_oid = hashlib.sha1(b"blob %d\0" % len(infos) + infos, usedforsecurity=False).hexdigest()
    shard_entry = {"type": "file", "oid": "0" * 40, "size": size, "path": SHARD}
    shard_entry["lfs"] = {"oid": digest.hexdigest(), "size": size, "pointerSize": 134}
    api = f"/api/datasets/{REPO}"
    listings = {
        f"{api}/revision/main": {"id": REPO, "sha": SHA},
        f"{api}/tree/{SHA}/data": [shard_entry],
        f"{api}/tree/{SHA}": [{"type": "file", "path": "dataset_infos.json", "size": len(infos), "oid": infos_oid}],
    }
    routes: dict[str, dict] = {}
    for path, doc in listings.items():
        target = folder / (hashlib.sha1(path.encode(), usedforsecurity=False).hexdigest() + ".json")
        target.write_text(json.dumps(doc))
        routes[path] = {"file": str(target)}
    hub = {"X-Repo-Commit": SHA}
    routes[f"/datasets/{REPO}/resolve/{SHA}/{SHARD}"] = {
        "status": 302,
        "cdn": "/cdn/shard",  # on another origin (localhost), as the Hub's CDN is
        "headers": {**hub, "X-Linked-Etag": f'"{digest.hexdigest()}"', "X-Linked-Size": str(size)},
    }
    routes["/cdn/shard"] = {"file": str(shard)}
    routes[f"/datasets/{REPO}/resolve/{SHA}/dataset_infos.json"] = {
        "file": str(folder / "dataset_infos.json"),
        "headers": {**hub, "ETag": f'"{infos_oid}"'},
    }
    return routes


def build_repo(folder: Path, rows: int, image_kb: int) -> dict:
    """Write the shard and dataset_infos.json under ``folder``; return the routes the server answers and the shard's
    facts."""
    import pyarrow.parquet as pq

    bases = _noise_jpegs(image_kb)
    infos = (ROOT / "tests/pipeline/fixtures/huggan_wikiart_dataset_infos.json").read_bytes()
    shard = folder / "shard.parquet"
    _write_shard(shard, rows, bases, infos)
    (folder / "dataset_infos.json").write_bytes(infos)
    routes = _routes(folder, shard, infos)
    meta = pq.ParquetFile(shard).metadata
    image = meta.row_group(0).column(0)
    return {
        "routes": routes,
        "rows": rows,
        "bytes": shard.stat().st_size,
        "row_groups": meta.num_row_groups,
        # the image column's dictionary page (the first 1024 images) and the data pages after it (the plain rest)
        "image_dictionary_mb": round((image.data_page_offset - image.dictionary_page_offset) / 1e6, 1),
        "image_data_pages_mb": round(
            (image.total_compressed_size - image.data_page_offset + image.dictionary_page_offset) / 1e6, 1
        ),
        "image_bytes_mean": round(sum(len(b) for b in bases) / len(bases)),
    }


# ----------------------------------------------------------------------------------------- the server (child process)


def serve(routes_file: Path) -> None:
    """Serve the routes (exact path -> file or redirect, with headers) on 127.0.0.1, streaming the files; print the
    port, then run forever."""
    routes = json.loads(routes_file.read_text())

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, body: bool) -> None:
            route = routes.get(self.path.split("?")[0])
            if route is None:
                self.send_error(404)
                return
            self.send_response(route.get("status", 200))
            for key, value in route.get("headers", {}).items():
                self.send_header(key, value)
            if "cdn" in route:
                self.send_header("Location", f"http://localhost:{self.server.server_address[1]}{route['cdn']}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path = route["file"]
            self.send_header("Content-Length", str(os.path.getsize(path)))
            self.end_headers()
            if body:
                with open(path, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        self.wfile.write(chunk)

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()


# ----------------------------------------------------------------------------------------- the fetch (child process)


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_fetch(port: int, work: Path, per_class: int, reader: str) -> dict:
    """Run the real fetch against the local server and report this process's memory."""
    import pyarrow as pa

    from pipeline.config import load_params
    from pipeline.sources import wikiart

    if reader == "row_group":  # each needed row group's image column read whole

        def whole_groups(path, rows, shard=""):
            import pyarrow.parquet as pq

            wanted, row0, pf = sorted(set(rows)), 0, pq.ParquetFile(path)
            for group in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(group).num_rows
                hits = [r for r in wanted if row0 <= r < row0 + n]
                if hits:
                    cells = pf.read_row_group(group, columns=[wikiart.IMAGE_COLUMN]).column(0).combine_chunks()
                    yield from zip(hits, cells.field("bytes").take([r - row0 for r in hits]).to_pylist(), strict=True)
                row0 += n

        wikiart.read_images = whole_groups
    params = load_params(ROOT / "params.yaml")
    cfg = params.fetch.wikiart.model_copy(
        update={
            "endpoint": f"http://127.0.0.1:{port}",
            "repo": REPO,
            "revision": "main",
            "data_dir": "data",
            "shards": 1,
            "max_shards": 1,
            "class_by": "style",
            "styles": STYLES,
            "artists": [],
            "genres": [],
            "per_class": per_class,
            "seed": 0,
        }
    )
    dl = params.fetch.download.model_copy(update={"cache_dir": str(work / "cache"), "retries": 0})
    with contextlib.suppress(OSError):  # reset the peak to the current size (Linux >= 4.0): the peak is the fetch's
        Path("/proc/self/clear_refs").write_text("5")
    before = _rss_mb("VmRSS")
    start = time.perf_counter()
    records = wikiart.fetch_wikiart(cfg, dl, work / "raw", "style")
    seconds = time.perf_counter() - start
    peak = _rss_mb("VmHWM")
    return {
        "reader": reader,
        "paintings": len(records),
        "written_mb": round(sum((work / "raw" / r.file).stat().st_size for r in records) / 1e6, 1),
        "rss_before_fetch_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
        "fetch_rss_increase_mb": round(peak - before, 1),
        "arrow_peak_mb": round(pa.default_memory_pool().max_memory() / 1e6, 1),
        "seconds": round(seconds, 2),
    }


# ----------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The command line (the module docstring is its description), with the hidden options of the two children."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1131, help="rows in the shard (huggan/wikiart: 81,444 / 72)")
    parser.add_argument("--image-kb", type=int, default=460, help="kB per image (huggan/wikiart: 521,983,739 / 1,132)")
    parser.add_argument("--per-class", type=int, default=20, help="paintings per style (6 styles)")
    parser.add_argument("--readers", nargs="+", choices=["batches", "row_group"], default=["batches", "row_group"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/fetch_memory.json")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # child: the HTTP server
    parser.add_argument("--fetch", nargs=2, metavar=("PORT", "WORK"), help=argparse.SUPPRESS)  # child: the fetch
    return parser


def run_fetch(
    port: int, work_dir: Path, per_class: int, reader: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """This script's fetch child (``--fetch``) against the server on ``port``, its output captured."""
    return subprocess.run(
        [
            sys.executable,
            __file__,
            "--fetch",
            str(port),
            str(work_dir),
            "--per-class",
            str(per_class),
            "--readers",
            reader,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.fetch:
        print(json.dumps(measure_fetch(int(args.fetch[0]), Path(args.fetch[1]), args.per_class, args.readers[0])))
        return 0

    from _report import write_report  # bench/ is on sys.path as the script's folder; it imports torch

    with tempfile.TemporaryDirectory(prefix="nst-fetch-memory-") as tmp:
        work = Path(tmp)
        shard = build_repo(work, args.rows, args.image_kb)
        (work / "routes.json").write_text(json.dumps(shard.pop("routes")))
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "TQDM_DISABLE": "1"}
        env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(work / "routes.json")], stdout=subprocess.PIPE, text=True, env=env
        )
        results = []
        try:
            port = int(server.stdout.readline())  # type: ignore[union-attr]
            for reader in args.readers:
                done = run_fetch(port, work / reader, args.per_class, reader, env)
                if done.returncode != 0:
                    sys.stderr.write(done.stderr[-4000:])
                    return done.returncode
                measured = json.loads(done.stdout.strip().splitlines()[-1])
                row = {**{f"shard_{k}": v for k, v in shard.items()}, **measured}
                print(json.dumps(row), flush=True)
                results.append(row)
        finally:
            server.terminate()
            server.wait(timeout=10)
    write_report("fetch_memory", results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
