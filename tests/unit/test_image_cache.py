"""The integration tier's one image cache (tests/integration/vm.py
cached_image), with a stand-in build: built once, reused, an interrupted
build never reused, superseded images deleted and others kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.vm import cached_image


def fake_build(calls: list[str], key: str, fail: bool = False):
    def build(work: Path, out: Path) -> None:
        calls.append(key)
        out.mkdir()
        for name in ("disk.img", "vmlinuz", "initrd.img"):
            (out / name).write_text(key)
        if fail:
            raise RuntimeError("build interrupted")
        (out / "recipe.json").write_text(json.dumps({"key": key, "kind": "a"}))

    return build


def never(other: Path, info: dict) -> bool:
    return False


def test_built_once_then_reused(tmp_path):
    calls: list[str] = []
    first = cached_image(tmp_path, "img-1", fake_build(calls, "1"), never)
    again = cached_image(tmp_path, "img-1", fake_build(calls, "1"), never)
    assert first == again == tmp_path / "img-1" / "disk.img"
    assert calls == ["1"] and first.read_text() == "1"
    assert not list(tmp_path.glob(".tmp-*"))


def test_an_interrupted_build_is_not_reused_and_its_leftovers_go(tmp_path):
    calls: list[str] = []
    with pytest.raises(RuntimeError):
        cached_image(tmp_path, "img-1", fake_build(calls, "1", fail=True), never)
    assert not (tmp_path / "img-1").exists() and not list(tmp_path.glob(".tmp-*"))
    # A leftover of a build killed outright (no cleanup ran) goes too.
    (tmp_path / ".tmp-img-1-killed").mkdir()
    cached_image(tmp_path, "img-1", fake_build(calls, "1"), never)
    assert calls == ["1", "1"] and not list(tmp_path.glob(".tmp-*"))


def test_superseded_images_go_once_the_new_one_is_in_place_and_others_stay(tmp_path):
    calls: list[str] = []
    cached_image(tmp_path, "a-old", fake_build(calls, "old"), never)
    cached_image(tmp_path, "b-other", fake_build(calls, "other"), never)
    (tmp_path / "a-old.build.log").write_text("log")
    cached_image(
        tmp_path, "a-new", fake_build(calls, "new"), lambda other, info: other.name.startswith("a-")
    )
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "a-new",
        "b-other",
    ]
