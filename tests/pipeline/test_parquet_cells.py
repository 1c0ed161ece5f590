"""pipeline.sources.parquet_cells against pyarrow: every cell it streams equals what pyarrow reads, for the page
layouts pyarrow writes (codecs, dictionary or plain, data pages v1/v2, one page or many, nulls, several row groups),
and layouts it does not stream fall back to pyarrow with a logged reason."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.sources.parquet_cells import read_cells

ROWS = 40
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def cells(seed: int, nulls: bool) -> list[dict | None]:
    """Image-like cells: incompressible bytes with compressible runs (so snappy emits literals and copies, some
    overlapping), some empty, and with ``nulls`` a null struct or a null ``bytes`` now and then."""
    rng = random.Random(seed)
    out: list[dict | None] = []
    for i in range(ROWS):
        if nulls and i % 7 == 3:
            out.append(None)
        elif nulls and i % 11 == 5:
            out.append({"bytes": None, "path": f"{i}"})
        else:
            data = bytes([i]) * rng.randint(0, 300) + rng.randbytes(rng.randint(0, 2500)) + b"abc" * rng.randint(0, 90)
            out.append({"bytes": data, "path": f"{i}.jpg"})
    return out


def write(path: Path, values: list[dict | None], **options) -> list[bytes | None]:
    table = pa.table({"image": pa.array(values, IMAGE), "label": list(range(ROWS))})
    pq.write_table(table, path, **options)
    return [v["bytes"] if v else None for v in pq.read_table(path).column("image").to_pylist()]


LAYOUTS = {
    # pyarrow's defaults in one call, as `datasets` wrote a shard: one row group, every image in one dictionary page
    "defaults": {},
    "plain-snappy-one-page": {"use_dictionary": False},
    "uncompressed-dictionary": {"compression": "none"},
    "gzip-plain": {"compression": "gzip", "use_dictionary": False},
    "gzip-dictionary": {"compression": "gzip"},
    "v2-snappy-dictionary": {"data_page_version": "2.0"},
    "v2-uncompressed-plain": {"data_page_version": "2.0", "compression": "none", "use_dictionary": False},
    "v2-gzip-plain": {"data_page_version": "2.0", "compression": "gzip", "use_dictionary": False},
    # many small pages and row groups: pages without selected rows are skipped
    "many-pages-plain": {"use_dictionary": False, "write_batch_size": 3, "data_page_size": 2000, "row_group_size": 15},
    "many-pages-dictionary": {"write_batch_size": 3, "data_page_size": 2000, "row_group_size": 15},
    "many-pages-v2": {"data_page_version": "2.0", "write_batch_size": 2, "data_page_size": 1000, "row_group_size": 9},
}


@pytest.mark.parametrize("nulls", [False, True], ids=["dense", "nulls"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_streamed_cells_equal_pyarrows(tmp_path, layout, nulls, caplog):
    truth = write(tmp_path / "f.parquet", cells(len(layout), nulls), **LAYOUTS[layout])
    rng = random.Random(1)
    for rows in ([0], [ROWS - 1], sorted(rng.sample(range(ROWS), 13)), list(range(ROWS)), []):
        with caplog.at_level(logging.INFO, logger="pipeline.sources.parquet_cells"):
            got = list(read_cells(tmp_path / "f.parquet", "image.bytes", reversed(rows)))
        assert sorted(r for r, _ in got) == rows  # each asked-for row once
        assert dict(got) == {r: truth[r] for r in rows}
    assert "pyarrow" not in caplog.text  # streamed, no fallback


def test_a_layout_it_does_not_stream_falls_back_to_pyarrow(tmp_path, caplog):
    truth = write(tmp_path / "f.parquet", cells(0, True), compression="zstd", row_group_size=25)
    rows = [1, 3, 24, 25, 39]
    with caplog.at_level(logging.INFO, logger="pipeline.sources.parquet_cells"):
        got = dict(read_cells(tmp_path / "f.parquet", "image.bytes", rows))
    assert got == {r: truth[r] for r in rows}
    assert caplog.text.count("reading with pyarrow (whole pages in memory): codec ZSTD") == 2  # once per row group


def test_a_top_level_binary_column(tmp_path):
    data = [random.Random(i).randbytes(i * 10) for i in range(ROWS)]
    pq.write_table(pa.table({"png": pa.array(data, pa.binary())}), tmp_path / "f.parquet")
    assert dict(read_cells(tmp_path / "f.parquet", "png", [0, 5, 39])) == {0: data[0], 5: data[5], 39: data[39]}


def test_a_missing_column_is_named_at_once(tmp_path):
    write(tmp_path / "f.parquet", cells(0, False))
    with pytest.raises(ValueError, match=r"no column 'img\.bytes' \(leaf columns: image\.bytes, image\.path, label\)"):
        read_cells(tmp_path / "f.parquet", "img.bytes", [0])
