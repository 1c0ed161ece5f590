"""Selected cells of one binary parquet column, streamed page by page: memory stays at about one cell.

Why not pyarrow alone: pyarrow decodes whole pages, and a page can hold a whole row group's images. pyarrow's writer
checks the page and dictionary size limits only after each ``write_batch_size`` (1024) values, so up to 1,024 images
written in one call share one page (a dictionary page, with the default dictionary encoding). A shard pushed by the
``datasets`` of 2022 (huggan/wikiart: about 1,130 images, 0.5 GB per shard) was most likely written that way, in one
call of its whole shard (later ``datasets`` releases write image datasets in row groups of 100 rows). Reading any
image of such a page with pyarrow holds the page about twice, read and decoded: for a 200 MB single-page shard,
454 MB of Arrow memory and +541 MB resident (bench/fetch_memory.py, ``--readers pyarrow``).

This reader parses the page headers itself (Thrift compact protocol; ``PageHeader`` of parquet-format's
parquet.thrift), seeks past the pages that hold no selected row and streams the others: codecs UNCOMPRESSED, SNAPPY
(raw snappy decoded here with a 64 KiB window: the snappy library compresses 64 KiB blocks independently, so no copy
reaches further back) and GZIP (zlib); PLAIN and dictionary-encoded (PLAIN_DICTIONARY / RLE_DICTIONARY) BYTE_ARRAY
values; data pages v1 and v2; definition levels in the RLE / bit-packed hybrid. Any other layout (another codec or
encoding, a repeated column, a snappy copy beyond the window) raises :class:`Unsupported` inside the reader, which then
reads that row group's remaining cells with pyarrow instead (correct, with whole pages in memory) and logs why.
"""

from __future__ import annotations

import bisect
import logging
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

CHUNK = 1 << 16  # bytes read from the file (and produced by a decompressor) at a time
SNAPPY_WINDOW = 1 << 16  # snappy's block size (snappy.cc kBlockSize): copies never reach further back
PYARROW_BATCH_ROWS = 32  # the fallback's record batches: 32 images of ~0.5 MB

# parquet.thrift enums
_DATA_PAGE, _INDEX_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 1, 2, 3
_PLAIN, _PLAIN_DICTIONARY, _RLE, _RLE_DICTIONARY = 0, 2, 3, 8

Cell = tuple[int, bytes | None]  # (row index in the file, the value; None for a null)


class Unsupported(Exception):
    """A page layout this reader does not stream (the caller falls back to pyarrow)."""


# ----------------------------------------------------------------------------------------- byte streams


class _Stream:
    """Sequential reads over an iterator of byte chunks, holding at most one chunk plus what a read returns."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._buf = self._buf[self._pos :] + chunk
                self._pos = 0
                return True
        return False

    def at_end(self) -> bool:
        return self._pos >= len(self._buf) and not self._fill()

    def read(self, n: int) -> bytes:
        parts = []
        while n > 0:
            if self._pos >= len(self._buf) and not self._fill():
                raise Unsupported("a page ends before its values do")
            part = self._buf[self._pos : self._pos + n]
            self._pos += len(part)
            n -= len(part)
            parts.append(part)
        return b"".join(parts)

    def skip(self, n: int) -> None:
        while n > 0:
            if self._pos >= len(self._buf) and not self._fill():
                raise Unsupported("a page ends before its values do")
            step = min(n, len(self._buf) - self._pos)
            self._pos += step
            n -= step

    def byte(self) -> int:
        return self.read(1)[0]

    def varint(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise Unsupported("malformed varint")

    def u32(self) -> int:
        return int.from_bytes(self.read(4), "little")

    def rest(self) -> bytes:
        """Everything left (for small remainders only, e.g. a data page's dictionary indices)."""
        parts = [self._buf[self._pos :]]
        parts.extend(self._chunks)
        self._buf, self._pos = b"", 0
        return b"".join(parts)


class _FileStream(_Stream):
    """Reads straight from a file, never past what was asked for (page headers: the body follows them)."""

    def __init__(self, fh: BinaryIO) -> None:
        super().__init__(iter(()))
        self._fh = fh

    def read(self, n: int) -> bytes:
        data = self._fh.read(n)
        if len(data) != n:
            raise Unsupported("the file ends inside a page header")
        return data

    def skip(self, n: int) -> None:
        self.read(n)


def _file_chunks(fh: BinaryIO, n: int) -> Iterator[bytes]:
    """The next ``n`` bytes of ``fh``, in chunks."""
    while n > 0:
        chunk = fh.read(min(CHUNK, n))
        if not chunk:
            raise Unsupported("the file ends inside a page")
        n -= len(chunk)
        yield chunk


def _snappy(src: _Stream) -> Iterator[bytes]:
    """Decode raw snappy (github.com/google/snappy format_description.txt) as a stream of chunks."""
    src.varint()  # uncompressed length; the page header has it too
    window = bytearray()
    out = bytearray()
    while not src.at_end():
        tag = src.byte()
        kind = tag & 3
        if kind == 0:  # literal
            n = tag >> 2
            if n >= 60:
                n = int.from_bytes(src.read(n - 59), "little")
            piece = src.read(n + 1)
        else:  # copy from what was already produced
            if kind == 1:
                length, offset = ((tag >> 2) & 7) + 4, ((tag >> 5) << 8) | src.byte()
            elif kind == 2:
                length, offset = (tag >> 2) + 1, int.from_bytes(src.read(2), "little")
            else:
                length, offset = (tag >> 2) + 1, int.from_bytes(src.read(4), "little")
            if not 0 < offset <= len(window):
                raise Unsupported(f"snappy copy {offset} bytes back, beyond the {SNAPPY_WINDOW}-byte window")
            start = len(window) - offset
            if offset >= length:
                piece = bytes(window[start : start + length])
            else:  # overlapping copy: the last `offset` bytes repeat
                piece = (bytes(window[start:]) * (length // offset + 1))[:length]
        window += piece
        if len(window) > 2 * SNAPPY_WINDOW:
            del window[:-SNAPPY_WINDOW]
        out += piece
        if len(out) >= CHUNK:
            yield bytes(out)
            out.clear()
    if out:
        yield bytes(out)


def _gunzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Parquet's GZIP codec is RFC 1952 gzip; decode it in bounded steps."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    for chunk in chunks:
        data = chunk
        while data:
            yield decoder.decompress(data, CHUNK)
            data = decoder.unconsumed_tail
    yield decoder.flush()


def _decoded(chunks: Iterator[bytes], codec: str) -> _Stream:
    if codec == "UNCOMPRESSED":
        return _Stream(chunks)
    if codec == "SNAPPY":
        return _Stream(_snappy(_Stream(chunks)))
    if codec == "GZIP":
        return _Stream(_gunzip(chunks))
    raise Unsupported(f"codec {codec}")


# ----------------------------------------------------------------------------------------- thrift compact protocol


def _struct(src: _Stream) -> dict[int, object]:
    """One Thrift compact-protocol struct as {field id: value} (nested structs as dicts, unknown fields kept)."""
    fields: dict[int, object] = {}
    last = 0
    while True:
        head = src.byte()
        if head == 0:  # STOP
            return fields
        delta, ftype = head >> 4, head & 0x0F
        if delta:
            fid = last + delta
        else:
            raw = src.varint()
            fid = (raw >> 1) ^ -(raw & 1)
        last = fid
        fields[fid] = _value(src, ftype)


def _value(src: _Stream, ftype: int) -> object:
    if ftype in (1, 2):  # BOOLEAN_TRUE / BOOLEAN_FALSE, in the field header
        return ftype == 1
    if ftype == 3:  # i8
        return src.byte()
    if ftype in (4, 5, 6):  # i16 / i32 / i64, zigzag varints
        raw = src.varint()
        return (raw >> 1) ^ -(raw & 1)
    if ftype == 7:  # double
        src.skip(8)
        return None
    if ftype == 8:  # binary / string
        return src.read(src.varint())
    if ftype in (9, 10):  # list / set
        head = src.byte()
        size, etype = head >> 4, head & 0x0F
        if size == 15:
            size = src.varint()
        return [_element(src, etype) for _ in range(size)]
    if ftype == 11:  # map
        size = src.varint()
        if not size:
            return []
        kinds = src.byte()
        return [(_element(src, kinds >> 4), _element(src, kinds & 0x0F)) for _ in range(size)]
    if ftype == 12:
        return _struct(src)
    raise Unsupported(f"thrift type {ftype} in a page header")


def _element(src: _Stream, etype: int) -> object:
    if etype in (1, 2):  # a boolean inside a container is one byte
        return src.byte() == 1
    return _value(src, etype)


# ----------------------------------------------------------------------------------------- levels and indices


def _hybrid(data: bytes, bit_width: int, count: int) -> list[int]:
    """``count`` values of the RLE / bit-packing hybrid encoding (parquet-format Encodings.md) in ``data``."""
    out: list[int] = []
    src = _Stream(iter([data]))
    byte_width = (bit_width + 7) // 8
    mask = (1 << bit_width) - 1
    while len(out) < count:
        header = src.varint()
        if header & 1:  # bit-packed: groups of 8 values, least significant bit first
            groups = header >> 1
            packed = int.from_bytes(src.read(groups * bit_width), "little")
            out.extend((packed >> (i * bit_width)) & mask for i in range(groups * 8))
        else:  # a run of one repeated value
            value = int.from_bytes(src.read(byte_width), "little") if byte_width else 0
            out.extend([value] * (header >> 1))
    return out[:count]


# ----------------------------------------------------------------------------------------- one column chunk


def _data_page_cells(
    fh: BinaryIO, header: dict, codec: str, max_def: int, first_row: int, hits: list[int], dictionary_rows: dict
) -> Iterator[Cell]:
    """Cells of ``hits`` (file rows) in one data page; dictionary-encoded values are noted in ``dictionary_rows``."""
    size = int(header[3])
    if header[1] == _DATA_PAGE:
        page = header[5]
        num_values, encoding = int(page[1]), int(page[2])
        if max_def and int(page.get(3, _RLE)) != _RLE:
            raise Unsupported(f"definition levels in encoding {page.get(3)}")
        src = _decoded(_file_chunks(fh, size), codec)
        levels = _hybrid(src.read(src.u32()), max_def.bit_length(), num_values) if max_def else [0] * num_values
    else:
        page = header[8]
        num_values, encoding = int(page[1]), int(page[4])
        def_bytes, rep_bytes = int(page[5]), int(page[6])
        levels_raw = _FileStream(fh)  # v2 levels are never compressed and have no length prefix
        levels_raw.skip(rep_bytes)
        def_levels = levels_raw.read(def_bytes)
        levels = _hybrid(def_levels, max_def.bit_length(), num_values) if max_def else [0] * num_values
        rest = size - def_bytes - rep_bytes
        compressed = page.get(7, True) and codec != "UNCOMPRESSED"
        src = _decoded(_file_chunks(fh, rest), codec) if compressed else _Stream(_file_chunks(fh, rest))
    # position of each present value among the page's values
    value_index: dict[int, int] = {}
    k = 0
    for i, level in enumerate(levels):
        if level == max_def:
            value_index[first_row + i] = k
            k += 1
    for row in hits:
        if row not in value_index:
            yield row, None
    wanted = {value_index[row]: row for row in hits if row in value_index}
    if not wanted:
        return
    if encoding == _PLAIN:
        for idx in range(max(wanted) + 1):
            length = src.u32()
            if idx in wanted:
                yield wanted[idx], src.read(length)
            else:
                src.skip(length)
    elif encoding in (_PLAIN_DICTIONARY, _RLE_DICTIONARY):
        bit_width = src.byte()
        indices = _hybrid(src.rest(), bit_width, k)
        for idx, row in wanted.items():
            dictionary_rows.setdefault(indices[idx], []).append(row)
    else:
        raise Unsupported(f"value encoding {encoding}")


def _chunk_cells(
    fh: BinaryIO, meta: pq.ColumnChunkMetaData, max_def: int, hits: list[int], row0: int
) -> Iterator[Cell]:
    """Cells of the sorted file rows ``hits`` from one column chunk that starts at file row ``row0``."""
    codec = meta.compression.upper()
    if codec not in ("UNCOMPRESSED", "SNAPPY", "GZIP"):
        raise Unsupported(f"codec {codec}")
    start = meta.dictionary_page_offset if meta.has_dictionary_page and meta.dictionary_page_offset else None
    start = start or meta.data_page_offset
    end = start + meta.total_compressed_size
    fh.seek(start)
    dictionary: tuple[int, dict] | None = None
    dictionary_rows: dict[int, list[int]] = {}
    first = row0
    while fh.tell() < end and first <= hits[-1]:
        header = _struct(_FileStream(fh))
        body = fh.tell()
        ptype, size = int(header[1]), int(header[3])
        if ptype == _DICTIONARY_PAGE:
            dictionary = (body, header)
        elif ptype in (_DATA_PAGE, _DATA_PAGE_V2):
            num_values = int(header[5][1] if ptype == _DATA_PAGE else header[8][1])
            page_hits = hits[bisect.bisect_left(hits, first) : bisect.bisect_left(hits, first + num_values)]
            if page_hits:
                yield from _data_page_cells(fh, header, codec, max_def, first, page_hits, dictionary_rows)
            first += num_values
        fh.seek(body + size)
    if dictionary_rows:
        if dictionary is None:
            raise Unsupported("dictionary-encoded values without a dictionary page")
        body, header = dictionary
        page = header[7]
        if int(page.get(2, _PLAIN)) not in (_PLAIN, _PLAIN_DICTIONARY):
            raise Unsupported(f"dictionary page encoding {page.get(2)}")
        fh.seek(body)
        src = _decoded(_file_chunks(fh, int(header[3])), codec)
        for idx in range(max(dictionary_rows) + 1):
            length = src.u32()
            if idx in dictionary_rows:
                value = src.read(length)
                for row in dictionary_rows[idx]:
                    yield row, value
            else:
                src.skip(length)


# ----------------------------------------------------------------------------------------- the file


def _pyarrow_cells(path: Path, row_group: int, column: str, hits: list[int], row0: int) -> Iterator[Cell]:
    """The fallback: pyarrow record batches of the row group (whole pages in memory), cells taken from them."""
    top, *inner = column.split(".")
    pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=CHUNK)
    offset = row0
    for batch in pf.iter_batches(
        batch_size=PYARROW_BATCH_ROWS, row_groups=[row_group], columns=[top], use_threads=False
    ):
        local = hits[bisect.bisect_left(hits, offset) : bisect.bisect_left(hits, offset + batch.num_rows)]
        if local:
            taken = batch.column(0).take(pa.array([r - offset for r in local], pa.int64()))
            for row, cell in zip(local, taken.to_pylist(), strict=True):
                for key in inner:
                    cell = cell.get(key) if isinstance(cell, dict) else None
                yield row, cell
        offset += batch.num_rows


def read_cells(path: str | Path, column: str, rows: Iterable[int]) -> Iterator[Cell]:
    """Yield ``(row, value)`` for each of ``rows`` (0-based row numbers in the file) of the binary leaf column
    ``column`` (a dotted path: ``"image.bytes"`` for a ``datasets`` Image column), ``None`` for a null.

    Cells come row group by row group, in no particular order within one. Memory: about one cell at a time, plus
    whole pages for a row group whose layout the streaming reader does not handle (see the module docstring).

    Raises:
        ValueError: (at once, not on iteration) the file has no such leaf column.
    """
    path = Path(path)
    pf = pq.ParquetFile(path)
    leaves = [pf.schema.column(i).path for i in range(len(pf.schema))]
    if column not in leaves:
        raise ValueError(f"{path}: no column {column!r} (leaf columns: {', '.join(leaves)})")
    return _cells(path, pf, leaves.index(column), column, sorted(set(rows)))


def _cells(path: Path, pf: pq.ParquetFile, leaf: int, column: str, wanted: list[int]) -> Iterator[Cell]:
    desc = pf.schema.column(leaf)
    row0 = 0
    with open(path, "rb") as fh:
        for rg in range(pf.metadata.num_row_groups):
            meta = pf.metadata.row_group(rg)
            hits = wanted[bisect.bisect_left(wanted, row0) : bisect.bisect_left(wanted, row0 + meta.num_rows)]
            done: set[int] = set()
            try:
                if hits:
                    if desc.max_repetition_level:
                        raise Unsupported("a repeated column")
                    if desc.physical_type != "BYTE_ARRAY":
                        raise Unsupported(f"physical type {desc.physical_type}")
                    for cell in _chunk_cells(fh, meta.column(leaf), desc.max_definition_level, hits, row0):
                        done.add(cell[0])
                        yield cell
                    if len(done) != len(hits):
                        raise Unsupported("fewer values than rows")
            except (Unsupported, KeyError, IndexError, TypeError, ValueError, zlib.error) as exc:
                log.info("%s row group %d: reading with pyarrow (whole pages in memory): %s", path.name, rg, exc)
                yield from _pyarrow_cells(path, rg, column, [r for r in hits if r not in done], row0)
            row0 += meta.num_rows
