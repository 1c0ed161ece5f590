"""pipeline.io: documented image-mode handling, strict rejection of bad files, atomic writes, list_images.

Every fixture image is made in ``tmp_path`` by the test itself; expected values are worked out by hand (or,
for CMYK, taken from Pillow's own conversion, which the module documents it uses).
"""

from __future__ import annotations

import io
import os
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.io import (
    ImageError,
    atomic_dir,
    atomic_path,
    image_size,
    list_images,
    read_image,
    write_image,
)

W, H = 8, 6


def rgb_array(seed: int = 0, size: tuple[int, int] = (W, H)) -> np.ndarray:
    """Seeded random (H, W, 3) uint8 pixels."""
    return np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def as_hwc(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) tensor -> (H, W, 3) numpy array."""
    return image[0].permute(1, 2, 0).numpy()


def check_tensor(image: torch.Tensor, width: int = W, height: int = H) -> None:
    assert image.shape == (1, 3, height, width)
    assert image.dtype == torch.float32
    assert float(image.min()) >= 0.0
    assert float(image.max()) <= 1.0


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR is patched to claim ``width`` x ``height`` (CRC fixed up)."""
    data = bytearray(png_bytes(Image.new("RGB", (1, 1), (10, 20, 30))))
    # 8-byte signature, then the IHDR chunk: length (4), type (4) at 12..16, data (13) at 16..29, CRC at 29..33.
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# ----------------------------------------------------------------------------------------- RGB round trips


def test_png_rgb_round_trip_is_exact(tmp_path: Path) -> None:
    arr = rgb_array()
    path = tmp_path / "rgb.png"
    Image.fromarray(arr).save(path)

    image = read_image(path)

    check_tensor(image)
    np.testing.assert_array_equal(as_hwc(image), arr.astype(np.float32) / 255.0)
    assert image_size(path) == (W, H)


def test_jpeg_rgb_round_trip_is_close(tmp_path: Path) -> None:
    # Flat colour blocks survive JPEG almost unchanged (no chroma subsampling, high quality).
    arr = np.zeros((H, W, 3), dtype=np.uint8)
    arr[:, : W // 2] = (200, 40, 90)
    arr[:, W // 2 :] = (30, 180, 250)
    path = tmp_path / "rgb.jpg"
    Image.fromarray(arr).save(path, quality=100, subsampling=0)

    image = read_image(path)

    check_tensor(image)
    np.testing.assert_allclose(as_hwc(image), arr / 255.0, atol=6 / 255)
    assert image_size(path) == (W, H)


def test_str_path_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb_array()).save(path)
    assert torch.equal(read_image(str(path)), read_image(path))
    assert image_size(str(path)) == (W, H)


# ----------------------------------------------------------------------------------------- image modes


def test_grayscale_l_is_replicated_to_three_channels(tmp_path: Path) -> None:
    gray = np.arange(W * H, dtype=np.uint8).reshape(H, W) * 5  # 0, 5, ..., 235
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)

    image = read_image(path)

    check_tensor(image)
    expected = gray.astype(np.float32) / 255.0
    for channel in range(3):
        np.testing.assert_array_equal(image[0, channel].numpy(), expected)


def test_bilevel_mode_1(tmp_path: Path) -> None:
    bits = np.zeros((H, W), dtype=bool)
    bits[::2, 1::2] = True
    img = Image.fromarray(bits)
    assert img.mode == "1"
    path = tmp_path / "bits.png"
    img.save(path)

    image = read_image(path)

    check_tensor(image)
    expected = np.repeat(bits.astype(np.float32)[..., None], 3, axis=2)  # black 0.0, white 1.0
    np.testing.assert_array_equal(as_hwc(image), expected)


def test_palette_values_go_through_the_palette(tmp_path: Path) -> None:
    palette = [(255, 0, 0), (0, 128, 255), (12, 34, 56)]
    indices = np.array([[0, 1, 2, 1, 0, 2, 2, 1]] * H, dtype=np.uint8)
    img = Image.fromarray(indices, mode="P")
    img.putpalette([v for colour in palette for v in colour])
    path = tmp_path / "pal.png"
    img.save(path)

    image = read_image(path)

    check_tensor(image)
    expected = np.array(palette, dtype=np.float32)[indices] / 255.0
    np.testing.assert_array_equal(as_hwc(image), expected)


def test_palette_with_transparency_is_composited_over_white(tmp_path: Path) -> None:
    # index 0: opaque red; index 1: fully transparent blue; index 2: (200, 100, 0) at alpha 128.
    img = Image.fromarray(np.array([[0, 1, 2, 0, 1, 2, 0, 1]] * H, dtype=np.uint8), mode="P")
    img.putpalette([255, 0, 0, 0, 0, 255, 200, 100, 0])
    path = tmp_path / "pal_t.png"
    img.save(path, transparency=bytes([255, 0, 128]))

    out = as_hwc(read_image(path))

    np.testing.assert_array_equal(out[0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(out[0, 1], [1.0, 1.0, 1.0])  # alpha 0 -> the white background
    # Over white: c * a/255 + 255 * (1 - a/255) with a = 128 -> 227.39, 177.19, 127.0 (of 255).
    np.testing.assert_allclose(out[0, 2], np.array([227.39, 177.19, 127.0]) / 255, atol=1 / 255)


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    arr = np.zeros((H, W, 4), dtype=np.uint8)
    arr[...] = (10, 20, 30, 255)  # opaque: unchanged
    arr[0, 0] = (10, 20, 30, 0)  # transparent: white, whatever the colour
    arr[0, 1] = (200, 100, 0, 128)
    arr[0, 2] = (0, 0, 0, 128)
    path = tmp_path / "rgba.png"
    Image.fromarray(arr, mode="RGBA").save(path)

    image = read_image(path)

    check_tensor(image)
    out = as_hwc(image)
    np.testing.assert_array_equal(out[0, 0], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(out[0, 1], np.array([227.39, 177.19, 127.0]) / 255, atol=1 / 255)
    np.testing.assert_allclose(out[0, 2], np.array([127.0, 127.0, 127.0]) / 255, atol=1 / 255)
    np.testing.assert_array_equal(out[1:], np.broadcast_to(np.array([10, 20, 30], np.float32) / 255, (H - 1, W, 3)))


def test_la_is_composited_over_white(tmp_path: Path) -> None:
    arr = np.zeros((H, W, 2), dtype=np.uint8)
    arr[...] = (100, 255)
    arr[0, 0] = (100, 0)
    arr[0, 1] = (0, 128)
    img = Image.fromarray(arr, mode="LA")
    path = tmp_path / "la.png"
    img.save(path)

    out = as_hwc(read_image(path))

    np.testing.assert_array_equal(out[0, 0], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(out[0, 1], [127 / 255] * 3, atol=1 / 255)  # 0 * 128/255 + 255 * 127/255
    np.testing.assert_array_equal(out[1, 1], [np.float32(100) / 255] * 3)


def test_cmyk_tiff_pure_inks(tmp_path: Path) -> None:
    inks = [(0, 0, 0, 0), (255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255)]
    rgb = [(1, 1, 1), (0, 1, 1), (1, 0, 1), (1, 1, 0), (0, 0, 0)]  # paper, cyan, magenta, yellow, black
    arr = np.array([inks], dtype=np.uint8)  # 1 x 5
    path = tmp_path / "inks.tif"
    Image.fromarray(arr, mode="CMYK").save(path)

    image = read_image(path)

    check_tensor(image, width=5, height=1)
    np.testing.assert_array_equal(as_hwc(image)[0], np.array(rgb, dtype=np.float32))


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_matches_pillow_conversion(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cmyk{suffix}"
    Image.fromarray(rgb_array(3)).convert("CMYK").save(path)
    with Image.open(path) as img:
        assert img.mode == "CMYK"
        reference = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0

    image = read_image(path)

    check_tensor(image)
    np.testing.assert_allclose(as_hwc(image), reference, atol=1 / 255)


def test_sixteen_bit_png_keeps_full_precision(tmp_path: Path) -> None:
    values = np.array([0, 1, 257, 1000, 32768, 65534, 65535, 12345], dtype=np.uint16)
    arr = np.tile(values, (H, 1))
    path = tmp_path / "gray16.png"
    Image.fromarray(arr).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # read back as 16-bit, not quantised to L by Pillow

    image = read_image(path)

    check_tensor(image)
    expected = (values / 65535.0).astype(np.float32)
    for channel in range(3):
        np.testing.assert_array_equal(image[0, channel, 0].numpy(), expected)
    # 1/65535 and 1000/65535 are not multiples of 1/255: an 8-bit detour would lose them.
    assert image[0, 0, 0, 1].item() == np.float32(1 / 65535) != 0.0
    assert abs(image[0, 0, 0, 3].item() - 4 / 255) > 1e-4


def _quadrants(height: int, width: int) -> np.ndarray:
    """(height, width, 3): four flat, clearly different colour quadrants (any wrong rotation shows)."""
    arr = np.empty((height, width, 3), dtype=np.uint8)
    h, w = height // 2, width // 2
    arr[:h, :w] = (255, 0, 0)
    arr[:h, w:] = (0, 255, 0)
    arr[h:, :w] = (0, 0, 255)
    arr[h:, w:] = (255, 255, 0)
    return arr


@pytest.mark.parametrize(
    ("orientation", "turns_ccw"),
    [
        (6, 1),  # stored turned 90 deg counter-clockwise; viewers turn it 90 deg clockwise
        (3, 2),  # stored upside down
        (8, -1),  # stored turned 90 deg clockwise
    ],
)
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, turns_ccw: int) -> None:
    upright = _quadrants(16, 32)  # 32 wide, 16 tall; 8 x 8 px JPEG blocks line up with the quadrants
    stored = np.ascontiguousarray(np.rot90(upright, k=turns_ccw))
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    img.save(path, exif=exif, quality=100, subsampling=0)
    with Image.open(path) as check:
        assert check.size == (stored.shape[1], stored.shape[0])
        assert check.getexif()[0x0112] == orientation

    image = read_image(path)

    check_tensor(image, width=32, height=16)
    np.testing.assert_allclose(as_hwc(image), upright / 255.0, atol=8 / 255)
    assert image_size(path) == (32, 16)


# ----------------------------------------------------------------------------------------- rejected files


def _zero_bytes(folder: Path) -> Path:
    path = folder / "empty.jpg"
    path.write_bytes(b"")
    return path


def _text_as_jpeg(folder: Path) -> Path:
    path = folder / "notes.jpg"
    path.write_text("this is not a picture\n" * 20, encoding="utf-8")
    return path


def _random_bytes_as_png(folder: Path) -> Path:
    path = folder / "noise.png"
    path.write_bytes(np.random.default_rng(7).integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    return path


def _truncated(folder: Path, suffix: str) -> Path:
    full = folder / f"full{suffix}"
    Image.fromarray(rgb_array(5, size=(64, 48))).save(full)  # noise: most bytes are pixel data
    data = full.read_bytes()
    path = folder / f"truncated{suffix}"
    path.write_bytes(data[: len(data) // 2])
    return path


def _missing(folder: Path) -> Path:
    return folder / "missing.png"


def _directory(folder: Path) -> Path:
    path = folder / "folder.png"
    path.mkdir()
    return path


def _float_mode(folder: Path) -> Path:
    path = folder / "float.tif"
    img = Image.fromarray(np.linspace(0, 3, W * H, dtype=np.float32).reshape(H, W))
    assert img.mode == "F"
    img.save(path)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_zero_bytes, "empty"),
        (_text_as_jpeg, "not an image"),
        (_random_bytes_as_png, "not an image"),
        (lambda folder: _truncated(folder, ".jpg"), "truncated"),
        (lambda folder: _truncated(folder, ".png"), "truncated"),
        (_missing, "does not exist"),
        (_directory, "not a file"),
        (_float_mode, "mode F"),
    ],
    ids=["zero-bytes", "text", "random-bytes", "truncated-jpeg", "truncated-png", "missing", "directory", "mode-F"],
)
def test_read_image_rejects_bad_files(tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ImageError) as info:
        read_image(path)
    assert path.name in str(info.value)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "make",
    [_zero_bytes, _text_as_jpeg, _random_bytes_as_png, _missing, _directory],
    ids=["zero-bytes", "text", "random-bytes", "missing", "directory"],
)
def test_image_size_rejects_unreadable_files(tmp_path: Path, make) -> None:
    path = make(tmp_path)
    with pytest.raises(ImageError, match=path.name):
        image_size(path)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_image_size_on_truncated_file_raises_only_image_error(tmp_path: Path, suffix: str) -> None:
    # image_size reads the header; it may or may not notice the missing tail, but never raises anything else.
    path = _truncated(tmp_path, suffix)
    try:
        result: object = image_size(path)
    except ImageError as exc:
        result = str(exc)
    assert result == (64, 48) or (isinstance(result, str) and path.name in result)


def test_max_pixels_bound(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.fromarray(rgb_array()).save(path)

    check_tensor(read_image(path, max_pixels=W * H))  # exactly at the bound: fine
    assert image_size(path, max_pixels=W * H) == (W, H)
    for call in (read_image, image_size):
        with pytest.raises(ImageError) as info:
            call(path, max_pixels=W * H - 1)
        message = str(info.value)
        assert path.name in message
        assert "max_pixels" in message
        assert str(W * H) in message


def test_header_over_max_pixels_is_rejected_before_decoding(tmp_path: Path) -> None:
    # 10000 x 10000 = 1e8 pixels: over our default bound (4e7), below Pillow's own error limit.
    path = tmp_path / "big.png"
    path.write_bytes(png_with_size(10_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not leak
        start = time.perf_counter()
        for call in (read_image, image_size):
            with pytest.raises(ImageError, match=r"big\.png.*max_pixels"):
                call(path)
        assert time.perf_counter() - start < 1.0


def test_gigantic_png_is_rejected_quickly(tmp_path: Path) -> None:
    path = tmp_path / "gigantic.png"
    path.write_bytes(png_with_size(100_000, 100_000))
    assert struct.unpack(">II", path.read_bytes()[16:24]) == (100_000, 100_000)  # the header claims 1e10 px
    start = time.perf_counter()
    for call in (read_image, image_size):
        with pytest.raises(ImageError) as info:
            call(path)
        message = str(info.value)
        assert "gigantic.png" in message
        assert "max_pixels" in message or "too large" in message
    assert time.perf_counter() - start < 1.0


# ----------------------------------------------------------------------------------------- writing


def test_write_image_round_trips_8_bit_exactly(tmp_path: Path) -> None:
    arr = rgb_array(11)
    image = torch.from_numpy(arr.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    path = tmp_path / "out" / "img.png"  # parent folder is created

    write_image(image, path)

    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(img), arr)
    assert torch.equal(read_image(path), image)
    assert sorted(os.listdir(path.parent)) == ["img.png"]  # no temp files left behind


def test_write_image_clamps_and_rounds(tmp_path: Path) -> None:
    values = [-0.3, 0.0, 0.49 / 255, 0.51 / 255, 127.4 / 255, 127.6 / 255, 254.49 / 255, 254.51 / 255, 1.0, 1.7]
    expected = [0, 0, 0, 1, 127, 128, 254, 255, 255, 255]
    row = torch.tensor(values, dtype=torch.float32)
    image = row.expand(1, 3, 2, len(values)).clone()
    image[0, 1] = 1.0 - image[0, 1]  # the green channel counts down: clamping on both ends per channel
    path = tmp_path / "clamped.png"

    write_image(image, path)

    with Image.open(path) as img:
        out = np.asarray(img)
    assert out.shape == (2, len(values), 3)
    np.testing.assert_array_equal(out[0, :, 0], expected)
    np.testing.assert_array_equal(out[1, :, 2], expected)
    assert out[0, :, 1].tolist() == [255, 255, 255, 254, 128, 127, 1, 0, 0, 0]


def test_write_image_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "img.png"
    path.write_bytes(b"old")
    image = torch.full((1, 3, H, W), 0.5)

    write_image(image, path)

    assert read_image(path).shape == (1, 3, H, W)
    assert os.listdir(tmp_path) == ["img.png"]


def test_write_image_failure_leaves_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "img.png"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match="RGB"):
        write_image(torch.zeros(1, 4, H, W), path)  # 4 channels: not an RGB image
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["img.png"]


def test_atomic_path_exception_leaves_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("old", encoding="utf-8")

    def half_write() -> None:
        with atomic_path(path) as tmp:
            assert tmp.parent == tmp_path
            assert tmp != path
            tmp.write_text("half-written", encoding="utf-8")
            assert path.read_text(encoding="utf-8") == "old"  # nothing visible before the block ends
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        half_write()

    assert path.read_text(encoding="utf-8") == "old"
    assert os.listdir(tmp_path) == ["data.txt"]


def test_atomic_path_success_replaces(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "data.txt"
    with atomic_path(path) as tmp:
        tmp.write_text("new", encoding="utf-8")
        assert not path.exists()
    assert path.read_text(encoding="utf-8") == "new"
    assert os.listdir(path.parent) == ["data.txt"]


# ----------------------------------------------------------------------------------------- atomic_dir


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in root.rglob("*") if p.is_file()}


def _fill_then_fail(out: Path) -> None:
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new", encoding="utf-8")
        assert (tmp / "new.txt").is_file()
        raise RuntimeError("boom")


def test_atomic_dir_success_replaces_old_contents(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "nested").mkdir(parents=True)
    (out / "old.txt").write_text("old", encoding="utf-8")
    (out / "nested" / "stale.txt").write_text("stale", encoding="utf-8")

    with atomic_dir(out) as tmp:
        assert tmp != out
        assert list(tmp.iterdir()) == []  # starts empty
        (tmp / "new.txt").write_text("new", encoding="utf-8")
        assert _tree(out) == {"old.txt": "old", "nested/stale.txt": "stale"}  # old still in place meanwhile

    assert _tree(out) == {"new.txt": "new"}
    assert os.listdir(tmp_path) == ["out"]  # no .tmp / .old folders left


def test_atomic_dir_creates_a_new_folder(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with atomic_dir(out) as tmp:
        (tmp / "x.txt").write_text("x", encoding="utf-8")
    assert _tree(out) == {"x.txt": "x"}
    assert os.listdir(out.parent) == ["b"]


def test_atomic_dir_exception_keeps_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old", encoding="utf-8")

    with pytest.raises(RuntimeError, match="boom"):
        _fill_then_fail(out)

    assert _tree(out) == {"old.txt": "old"}
    assert os.listdir(tmp_path) == ["out"]


def test_atomic_dir_exception_without_old_folder_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        _fill_then_fail(out)
    assert not out.exists()
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------- list_images


def test_list_images_sorted_case_insensitive_and_filtered(tmp_path: Path) -> None:
    for name in ["d.tiff", "b.PNG", "a.jpg", "c.JpEg", "e.gif", "f.WebP", "g.bmp", "h.tif", "i.jpeg"]:
        (tmp_path / name).write_bytes(b"x")  # list_images goes by name only: contents are not read
    for name in [".hidden.png", ".a.jpg", "notes.txt", "README", "image.png.bak", "raw.cr2", "x.svg"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()  # a directory with an image suffix is not a file
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nested.png").write_bytes(b"x")  # not recursive

    names = [p.name for p in list_images(tmp_path)]

    assert names == ["a.jpg", "b.PNG", "c.JpEg", "d.tiff", "e.gif", "f.WebP", "g.bmp", "h.tif", "i.jpeg"]
    assert all(p.parent == tmp_path for p in list_images(str(tmp_path)))


def test_list_images_empty_folder(tmp_path: Path) -> None:
    assert list_images(tmp_path) == []


def test_list_images_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="nowhere"):
        list_images(tmp_path / "nowhere")


def test_list_images_file_instead_of_folder(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"x")
    with pytest.raises(ImageError, match=r"a\.png"):
        list_images(path)
