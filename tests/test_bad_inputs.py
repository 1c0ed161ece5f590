"""Bad input, one parametrised suite through the real `nst` command: every case gets one clear message naming the
input (or is handled as the README documents), a non-zero exit where it must, and leaves earlier outputs intact.

A workspace is set up once per case: a small sample folder, `nst fetch` + `nst prepare` already run (the earlier
outputs), and an earlier one-off result at `earlier.png`. Each case then breaks one thing and runs one command.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline import cli
from pipeline.io import read_csv


@dataclass
class Workspace:
    root: Path
    params: Path
    sample: Path
    content: Path  # a good content image
    style: Path  # a good style image
    earlier: Path  # an earlier one-off output

    def write_params(self, change: Callable[[dict], None], name: str = "bad.yaml") -> Path:
        raw = yaml.safe_load(self.params.read_text())
        change(raw)
        path = self.root / name
        path.write_text(yaml.safe_dump(raw))
        return path

    def stylize(self, content: Path, *extra: str) -> list[str]:
        return [
            "stylize",
            "--method",
            "gatys",
            "--params",
            str(self.params),
            str(content),
            str(self.style),
            "-o",
            str(self.earlier),
            "--set",
            "iterations=1",
            "--set",
            "image_size=32",
            *extra,
        ]

    def fetch_prepare(self) -> list[list[str]]:
        return [
            ["fetch", "--params", str(self.params), "--out", str(self.root / "raw")],
            [
                "prepare",
                "--params",
                str(self.params),
                "--raw",
                str(self.root / "raw"),
                "--out",
                str(self.root / "prepared"),
            ],
        ]


def digest(root: Path) -> dict[str, str]:
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def rgb(_where: Path, size: tuple[int, int] = (40, 30), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


@pytest.fixture
def ws(tmp_path, sample_copy, repo_root) -> Workspace:
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["fetch"]["sample"]["dir"] = str(sample_copy)
    raw["fetch"]["download"]["cache_dir"] = str(tmp_path / "cache")
    raw["prepare"]["max_pixels"] = 300_000
    raw["prepare"]["min_side"] = 16
    raw["base"]["device"] = "cpu"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    earlier = tmp_path / "earlier.png"
    Image.fromarray(rgb(earlier, seed=9)).save(earlier)
    w = Workspace(
        tmp_path, params, sample_copy, sample_copy / "content/content0.png", sample_copy / "style/style0.png", earlier
    )
    for argv in w.fetch_prepare():
        assert cli.main(argv) == 0
    return w


# ------------------------------------------------------------------------------------------------ the cases


def corrupt(ws: Workspace) -> Path:
    path = ws.root / "corrupt.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)))
    return path


def truncated(ws: Workspace) -> Path:
    good = ws.root / "whole.png"
    Image.fromarray(rgb(good, (64, 64))).save(good)
    path = ws.root / "truncated.png"
    path.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    return path


def zero_byte(ws: Workspace) -> Path:
    path = ws.root / "empty.png"
    path.write_bytes(b"")
    return path


def not_an_image(ws: Workspace) -> Path:
    path = ws.root / "notes.png"
    path.write_text("these are my holiday notes, not a picture\n")
    return path


def mode_image(mode: str) -> Callable[[Workspace], Path]:
    def make(ws: Workspace) -> Path:
        base = Image.fromarray(rgb(ws.root, (40, 30), seed=3))
        if mode == "CMYK":
            path = ws.root / "cmyk.jpg"
            base.convert("CMYK").save(path)
        elif mode == "P":
            path = ws.root / "palette.png"
            base.convert("P", palette=Image.Palette.ADAPTIVE).save(path)
        elif mode == "I;16":
            path = ws.root / "sixteen.png"
            Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257).save(path)
        elif mode == "L":
            path = ws.root / "gray.png"
            base.convert("L").save(path)
        elif mode == "RGBA":
            path = ws.root / "alpha.png"
            rgba = base.convert("RGBA")
            rgba.putalpha(128)
            rgba.save(path)
        else:  # EXIF orientation 6: stored 40 x 30, shown rotated to 30 x 40
            path = ws.root / "rotated.jpg"
            exif = Image.Exif()
            exif[0x0112] = 6
            base.save(path, exif=exif)
        return path

    return make


@dataclass(frozen=True)
class Case:
    id: str
    run: Callable[[Workspace], list[list[str]]]  # the commands; the last one is the one judged
    code: int
    message: str | None  # regex the one error line must match ({name} = the bad input's name)
    check: Callable[[Workspace], None] | None = None


def stylize_bad(make: Callable[[Workspace], Path]) -> Callable[[Workspace], list[list[str]]]:
    def run(ws: Workspace) -> list[list[str]]:
        bad = make(ws)
        ws.__dict__["bad"] = bad
        return [ws.stylize(bad)]

    return run


def output_is_rgb(tall: bool = False) -> Callable[[Workspace], None]:
    def check(ws: Workspace) -> None:
        with Image.open(ws.earlier) as img:
            assert img.mode == "RGB"
            w, h = img.size
        assert (h > w) if tall else (w > h)  # EXIF rotation applied before stylizing

    return check


def add_to_sample(name: str, size: tuple[int, int]) -> Callable[[Workspace], list[list[str]]]:
    def run(ws: Workspace) -> list[list[str]]:
        Image.fromarray(rgb(ws.root, size, seed=5)).save(ws.sample / "content" / name)
        ws.__dict__["bad"] = ws.sample / "content" / name
        return ws.fetch_prepare()

    return run


def skipped(reason: str) -> Callable[[Workspace], None]:
    def check(ws: Workspace) -> None:
        rows = [r for r in read_csv(ws.root / "prepared" / "manifest.csv") if r["status"] == "skipped"]
        assert len(rows) == 1
        assert re.search(reason, rows[0]["reason"]), rows[0]["reason"]
        assert ws.__dict__["bad"].name in rows[0]["reason"]

    return check


def with_params(change: Callable[[dict], None], command: str = "prepare") -> Callable[[Workspace], list[list[str]]]:
    def run(ws: Workspace) -> list[list[str]]:
        bad = ws.write_params(change)
        ws.__dict__["bad"] = bad
        return [["prepare", "--params", str(bad), "--raw", str(ws.root / "raw"), "--out", str(ws.root / "prepared")]]

    return run


def set_key(dotted: str, value) -> Callable[[dict], None]:
    def change(raw: dict) -> None:
        *parents, last = dotted.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[last] = value

    return change


def folder_source(kind: str) -> Callable[[Workspace], list[list[str]]]:
    def run(ws: Workspace) -> list[list[str]]:
        folder = ws.root / f"{kind}-folder"
        if kind == "empty":  # the sample layout, with no images in it
            (folder / "content").mkdir(parents=True)
            (folder / "style").mkdir()
        params = ws.write_params(set_key("fetch.sample.dir", str(folder)))
        ws.__dict__["bad"] = folder
        return [["fetch", "--params", str(params), "--out", str(ws.root / "raw")]]

    return run


def one_style(ws: Workspace) -> list[list[str]]:
    for extra in sorted((ws.sample / "style").glob("style[1-9].png")):
        extra.unlink()
    ws.__dict__["bad"] = ws.sample / "style"
    fetch_to = ws.root / "raw-one"
    return [
        ["fetch", "--params", str(ws.params), "--out", str(fetch_to)],
        ["prepare", "--params", str(ws.params), "--raw", str(fetch_to), "--out", str(ws.root / "prepared")],
    ]


def bad_model(ws: Workspace) -> list[list[str]]:
    model = ws.root / "decoder.pt"
    model.write_bytes(b"PK\x03\x04 this is no checkpoint")
    ws.__dict__["bad"] = model
    return [
        [
            "stylize",
            "--method",
            "adain",
            "--params",
            str(ws.params),
            "--model",
            str(model),
            str(ws.content),
            str(ws.style),
            "-o",
            str(ws.earlier),
        ]
    ]


def bad_best(ws: Workspace) -> list[list[str]]:
    best = ws.root / "best.yaml"
    best.write_text("method: adain\nweights: {style_weight: .nan}\n")
    ws.__dict__["bad"] = best
    return [
        [
            "train",
            "--method",
            "adain",
            "--params",
            str(ws.params),
            "--tuned",
            str(best),
            "--content",
            str(ws.sample / "content"),
            "--style",
            str(ws.sample / "style"),
            "--out",
            str(ws.root / "models"),
        ]
    ]


def invalid_yaml(ws: Workspace) -> list[list[str]]:
    path = ws.root / "broken.yaml"
    path.write_text("prepare: [unclosed\n  seed: 0\n")
    ws.__dict__["bad"] = path
    return [["prepare", "--params", str(path), "--raw", str(ws.root / "raw"), "--out", str(ws.root / "prepared")]]


CASES = [
    Case("corrupt-file", stylize_bad(corrupt), 2, r"{name}: (corrupt|cannot read image|cannot identify)"),
    Case("truncated-file", stylize_bad(truncated), 2, r"{name}: .*(truncated|corrupt)"),
    Case("zero-byte-file", stylize_bad(zero_byte), 2, r"{name}: .*(empty|0 bytes)"),
    Case("not-an-image", stylize_bad(not_an_image), 2, r"{name}: "),
    Case("cmyk", stylize_bad(mode_image("CMYK")), 0, None, output_is_rgb()),
    Case("palette", stylize_bad(mode_image("P")), 0, None, output_is_rgb()),
    Case("16-bit", stylize_bad(mode_image("I;16")), 0, None, output_is_rgb()),
    Case("grayscale", stylize_bad(mode_image("L")), 0, None, output_is_rgb()),
    Case("rgba", stylize_bad(mode_image("RGBA")), 0, None, output_is_rgb()),
    Case("exif-rotated", stylize_bad(mode_image("EXIF")), 0, None, output_is_rgb(tall=True)),
    Case("1x1-image", add_to_sample("dot.png", (1, 1)), 0, None, skipped(r"smaller than prepare.min_side")),
    Case("over-the-bound", add_to_sample("huge.png", (700, 500)), 0, None, skipped(r"exceeds max_pixels")),
    Case("empty-folder", folder_source("empty"), 2, r"{name}.* (holds no image files|no images)"),
    Case("missing-folder", folder_source("missing"), 2, r"{name}.*(not found|does not exist|missing)"),
    Case("one-style-image", one_style, 2, r"1 usable style image"),
    Case("unknown-key", with_params(set_key("prepare.colour", 1)), 2, r"prepare\.colour"),
    Case("wrong-type", with_params(set_key("prepare.seed", "abc")), 2, r"prepare\.seed"),
    Case("out-of-range", with_params(set_key("prepare.split.train", -0.5)), 2, r"prepare\.split\.train"),
    Case(
        "nan-weight",
        with_params(set_key("methods.gatys.style_weight", float("nan"))),
        2,
        r"methods\.gatys\.style_weight",
    ),
    Case("unknown-profile", with_params(set_key("profile", "huge")), 2, r"profile"),
    Case("invalid-yaml", invalid_yaml, 2, r"{name}: not valid YAML"),
    Case("corrupt-model", bad_model, 2, r"{name}: not a readable AdaIN model"),
    Case("nan-tuned-weight", bad_best, 2, r"{name}: weights style_weight are not finite"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ws: Workspace, capsys):
    capsys.readouterr()
    earlier = {name: digest(ws.root / name) for name in ("raw", "prepared", "earlier.png")}
    commands = case.run(ws)
    for argv in commands[:-1]:
        assert cli.main(argv) == 0
    code = cli.main(commands[-1])
    err = capsys.readouterr().err
    assert code == case.code, err
    if case.message is not None:
        errors = [line for line in err.splitlines() if ": error: " in line]
        assert len(errors) == 1, err  # one clear message
        assert "Traceback" not in err
        name = re.escape(str(ws.__dict__.get("bad", "")))
        assert re.search(case.message.format(name=name), errors[0]), errors[0]
    if case.check is not None:
        case.check(ws)
    if code != 0:  # a failure destroys nothing
        for name, before in earlier.items():
            assert digest(ws.root / name) == before, f"{name} changed"


def test_unknown_method_is_refused_by_the_command_line(ws, capsys):
    before = digest(ws.earlier)
    with pytest.raises(SystemExit) as exc:
        cli.main(["stylize", "--method", "picasso", str(ws.content), str(ws.style), "-o", str(ws.earlier)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'picasso'" in err
    assert "gatys" in err  # the valid choices are listed
    assert digest(ws.earlier) == before


def test_cases_cover_twenty_kinds():
    assert len(CASES) + 1 >= 20
    assert len({c.id for c in CASES}) == len(CASES)
