import errno
import json
import os
import re
from datetime import datetime

import numpy as np
import pytest

from nbkit.output import atomic, storage
from nbkit.output.records import ImageRecord, run_key
from nbkit.output.storage import RunFolder, new_run_folder, slugify
from nbkit.png import read_png_metadata

HOSTILE = ["an armchair in the shape of an avocado", "", "/", "..", ".", "../../../etc/passwd",
           "..\\..\\windows\\system32", "a/b\\c", "x" * 500, "🦄🥑🎨", "日本語のプロンプト", "\x00", "a\x00b",
           "CON", "nul.txt", "com1", " .hidden. ", "---", "\ud800 lone surrogate", "tab\tnew\nline",
           "Crème brûlée à l'œuf"]
SETTINGS = {"temperature": 1.0, "top_k": 50, "top_p": None, "condition_scale": 10.0}
NOW = datetime(2024, 5, 1, 12, 30, 45)


def image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def record(prompt="a cat", prompt_index=0, image_index=0, seed=42, **kwargs):
    settings = kwargs.pop("settings", SETTINGS)
    return ImageRecord(prompt, prompt_index, image_index, seed, "dalle-mini", settings, **kwargs)


def pngs(folder):
    return sorted(p.name for p in folder.path.glob("*.png"))


def manifest_lines(folder):
    path = folder.path / storage.MANIFEST
    return path.read_text().splitlines() if path.exists() else []


def leftovers(path):
    return [p for p in path.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


# slugify

@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("max_length", [1, 3, 8, 40])
def test_slug_is_a_short_safe_ascii_name(text, max_length):
    slug = slugify(text, max_length)
    assert re.fullmatch(r"[a-z0-9._-]+", slug), slug
    assert 0 < len(slug) <= max_length
    assert slug not in (".", "..") and slug[0] not in ".-" and slug[-1] not in ".-"
    assert slug.split(".")[0].upper() not in {"CON", "NUL", "COM1"}


def test_slug_values():
    assert slugify("An armchair in the shape of an avocado!") == "an-armchair-in-the-shape-of-an-avocado"
    assert slugify("Crème brûlée à la façon") == "creme-brulee-a-la-facon"
    assert slugify("../../etc/passwd") == "etc-passwd"
    assert slugify("日本語") == slugify("") == slugify("..") == "prompt"
    assert slugify("CON") == "_con" and slugify("con.txt") == "_con.txt"
    assert slugify("x" * 500) == "x" * 40 and slugify("...hidden...", 4) == "hidd"
    with pytest.raises(ValueError):
        slugify("a", 0)


# folders and paths

def test_hostile_prompts_never_write_outside_the_run_folder(tmp_path):
    root = tmp_path / "root"
    folder = RunFolder.create(root, ["../../escape"], now=NOW)
    assert folder.path.parent == root and folder.path.name == "2024-05-01_123045_escape"
    written = [folder.path / storage.RUN_FILE]
    for i, prompt in enumerate(HOSTILE):
        written.append(folder.save_image(image(i), record(prompt, i)))
        written.append(folder.save_grid([image(i), image(i + 1)], prompt, i))
        assert RunFolder.create(root, [prompt], now=NOW).path.resolve().parent == root.resolve()
    for path in written:
        assert path.is_file() and path.resolve().parent == folder.path.resolve()
    assert {p for p in folder.path.rglob("*")} == set(written) | {folder.path / storage.MANIFEST}
    assert not any(p.is_file() for p in root.iterdir()) and set(tmp_path.iterdir()) == {root}
    assert len(manifest_lines(folder)) == len(HOSTILE)
    saved = [json.loads(line) for line in manifest_lines(folder)]
    assert [entry["prompt"] for entry in saved] == HOSTILE  # prompts kept exactly
    last = record(HOSTILE[-1], len(HOSTILE) - 1)
    assert read_png_metadata(folder.path / saved[-1]["file"]) == last.to_metadata()


def test_create_twice_in_the_same_second_gives_two_folders(tmp_path):
    first = RunFolder.create(tmp_path, ["a cat"], now=NOW)
    second = RunFolder.create(tmp_path, ["a cat"], now=NOW)
    assert first.path != second.path and first.path.is_dir() and second.path.is_dir()
    assert second.path.name == first.path.name + "-2"
    assert new_run_folder(tmp_path, ["a cat"], NOW).name == first.path.name + "-3"
    with pytest.raises(ValueError):
        new_run_folder(tmp_path, [])
    with pytest.raises(ValueError):
        new_run_folder(tmp_path, "a cat")


def test_open_needs_an_existing_folder(tmp_path):
    assert RunFolder.open(tmp_path).path == tmp_path
    with pytest.raises(FileNotFoundError):
        RunFolder.open(tmp_path / "nope")


# atomic writes, crashes, never overwriting

@pytest.mark.parametrize("where", ["fsync", "write", "link", "replace"])
def test_crash_while_writing_leaves_nothing(tmp_path, monkeypatch, where):
    folder = RunFolder.create(tmp_path, ["a cat"])

    def crash(*args, **kwargs):
        raise OSError(errno.EIO, f"crash in {where}")
    if where == "replace":  # no hard links (as on Google Drive): the placeholder must go too
        def no_link(*args):
            raise OSError(errno.ENOSYS, "no")
        monkeypatch.setattr(atomic.os, "link", no_link)
    if where == "write":  # the bytes are half written when it fails
        real_fdopen = os.fdopen

        class HalfFile:
            def __init__(self, *args, **kwargs):
                self.file = real_fdopen(*args, **kwargs)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.file.close()

            def write(self, data):
                self.file.write(data[:10])
                crash()
        monkeypatch.setattr(atomic.os, "fdopen", HalfFile)
    else:
        monkeypatch.setattr(atomic.os, where, crash)
    with pytest.raises(OSError, match="crash"):
        folder.save_image(image(), record())
    assert pngs(folder) == [] and leftovers(folder.path) == [] and manifest_lines(folder) == []
    monkeypatch.undo()
    assert folder.save_image(image(), record()).name == "000_a-cat_s42_000.png"


def test_crash_between_png_and_manifest_line_is_repaired_on_rerun(tmp_path, monkeypatch):
    folder = RunFolder.create(tmp_path, ["a cat"])

    def crash(self, entry):
        raise KeyboardInterrupt
    monkeypatch.setattr(RunFolder, "_append_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        folder.save_image(image(), record())
    assert pngs(folder) == ["000_a-cat_s42_000.png"] and manifest_lines(folder) == []
    before = (folder.path / "000_a-cat_s42_000.png").read_bytes()
    monkeypatch.undo()
    assert folder.save_image(image(), record()) == folder.path / "000_a-cat_s42_000.png"
    assert pngs(folder) == ["000_a-cat_s42_000.png"] and len(manifest_lines(folder)) == 1
    assert (folder.path / "000_a-cat_s42_000.png").read_bytes() == before
    # saved already: not saved again, and its path all the same (what a writer hands on)
    assert folder.save_image(image(1), record()) == folder.path / "000_a-cat_s42_000.png"
    assert len(manifest_lines(folder)) == 1 and (folder.path / "000_a-cat_s42_000.png").read_bytes() == before


def test_a_foreign_file_under_the_name_is_kept_and_a_new_name_chosen(tmp_path):
    folder = RunFolder.create(tmp_path, ["a cat"])
    taken = folder.path / "000_a-cat_s42_000.png"
    taken.write_bytes(b"someone else's file")
    (folder.path / "000_a-cat_s42_000-2.png").write_bytes(b"and another")
    path = folder.save_image(image(), record())
    assert path.name == "000_a-cat_s42_000-3.png"
    assert taken.read_bytes() == b"someone else's file"
    assert json.loads(manifest_lines(folder)[0])["file"] == "000_a-cat_s42_000-3.png"
    other = folder.save_image(image(1), record(seed=7, image_index=0))  # an image of ours is not "holding" it
    assert other.name == "000_a-cat_s7_000.png"


def test_grids_never_overwrite(tmp_path):
    folder = RunFolder.create(tmp_path, ["a cat"])
    first = folder.save_grid([image(0), image(1)], "a cat", 0)
    before = first.read_bytes()
    second = folder.save_grid([image(2), image(3)], "a cat", 0)
    assert (first.name, second.name) == ("000_a-cat_grid.png", "000_a-cat_grid-2.png")
    assert first.read_bytes() == before and second.read_bytes() != before
    assert read_png_metadata(second)["kind"] == "grid" and manifest_lines(folder) == []


def test_truncated_last_manifest_line_is_ignored(tmp_path):
    folder = RunFolder.create(tmp_path, ["a cat"])
    folder.save_image(image(0), record(image_index=0))
    folder.save_image(image(1), record(image_index=1))
    with open(folder.path / storage.MANIFEST, "a") as file:
        file.write('{"file": "000_a-cat_s42_002.png", "prompt": "a c')  # a crash mid-line
    assert folder.saved_keys() == {record(image_index=0).key, record(image_index=1).key}
    folder.save_image(image(2), record(image_index=2))
    assert len(folder.entries()) == 3 and len(folder.saved_keys()) == 3
    assert json.loads(manifest_lines(folder)[-1])["image_index"] == 2  # not glued to the broken line


# resuming

def reopen(root, prompts, key, expected_images):
    """What `RunWriter.open` and its first save do: the folder `RunFolder.find` gives, else a new one."""
    return RunFolder.find(root, key) or RunFolder.create(root, prompts, key, expected_images)


def test_resume_after_a_crash_writes_only_missing_images(tmp_path):
    prompts, seed, n_images = ["a cat", "a dog"], 42, 3
    key = run_key(prompts, seed, n_images, "dalle-mini", SETTINGS)
    records = [record(p, i, j, seed) for i, p in enumerate(prompts) for j in range(n_images)]
    first = reopen(tmp_path, prompts, key, len(records))
    before = [first.save_image(image(rec.image_index), rec) for rec in records[:3]]
    del first  # the notebook crashed

    folder = reopen(tmp_path, prompts, key, len(records))
    assert not folder.is_complete()
    results = [folder.save_image(image(rec.image_index), rec) for rec in records]
    assert results[:3] == before                                 # not written again: their paths handed back
    assert len(set(results)) == 6
    assert len(list(tmp_path.iterdir())) == 1 and len(pngs(folder)) == 6
    assert len(manifest_lines(folder)) == 6 and folder.saved_keys() == {rec.key for rec in records}
    assert folder.is_complete()

    again = reopen(tmp_path, prompts, key, len(records))  # finished: nothing left to make
    assert again.path == folder.path
    other = run_key(prompts, seed + 1, n_images, "dalle-mini", SETTINGS)
    assert reopen(tmp_path, prompts, other, 6).path != folder.path


def test_resume_picks_the_newest_unfinished_folder_with_the_key(tmp_path):
    key = run_key(["a cat"], 0, 2, "dalle-mini", SETTINGS)
    old = RunFolder.create(tmp_path, ["a cat"], key, 2, now=NOW)
    new = RunFolder.create(tmp_path, ["a cat"], key, 2, now=NOW)
    RunFolder.create(tmp_path, ["a cat"], "another key", 2, now=NOW)
    (tmp_path / "not a run").mkdir()
    assert RunFolder.find(tmp_path, key).path == new.path
    for i in range(2):
        new.save_image(image(i), record(image_index=i, seed=0))
    assert RunFolder.find(tmp_path, key).path == old.path     # unfinished first
    for i in range(2):
        old.save_image(image(i), record(image_index=i, seed=0))
    assert RunFolder.find(tmp_path, key).path == new.path     # then the newest


# reading what the manifest names

def test_image_path_is_the_checked_way_to_a_manifest_file(tmp_path):
    folder = RunFolder.create(tmp_path / "runs", ["a cat"])
    saved = folder.save_image(image(), record())
    assert [folder.image_path(entry) for entry in folder.entries()] == [saved]
    (tmp_path / "secret.png").write_bytes(b"not yours")
    (folder.path / "inside.png").symlink_to(saved.name)            # a link within the folder is fine
    assert folder.image_path({"file": "inside.png"}) == folder.path / "inside.png"
    (folder.path / "out.png").symlink_to(tmp_path / "secret.png")
    for name in ("../../secret.png", str(tmp_path / "secret.png"), "/etc/passwd", "sub/x.png", "..", ".", "",
                 "a\\b.png", "x\x00.png", "out.png"):
        message = f"manifest.jsonl lists {re.escape(repr(name))}, which is not a file directly in"
        with pytest.raises(ValueError, match=message):
            folder.image_path({"file": name, **record().to_metadata()})
    for entry in ({"prompt": "a cat"}, {"file": 3}):
        with pytest.raises(ValueError, match="manifest.jsonl: an entry has no file name"):
            folder.image_path(entry)


def test_a_crafted_manifest_line_cannot_send_a_reader_outside_the_folder(tmp_path):
    folder = RunFolder.create(tmp_path / "runs", ["a cat"])
    folder.save_image(image(), record())
    with open(folder.path / storage.MANIFEST, "a") as file:
        file.write(json.dumps({"file": "../../outside.png", **record(image_index=1).to_metadata()}) + "\n")
    first, crafted = folder.entries()
    assert folder.image_path(first).parent == folder.path
    with pytest.raises(ValueError, match=r"'\.\./\.\./outside\.png', which is not a file directly in"):
        folder.image_path(crafted)


def test_edit_runs_are_named_for_what_they_are(tmp_path):
    named = {
        "vary8": {"edit": "vary", "keep_rows": 8, "file": "x.png"},
        "right8": {"edit": "extend", "direction": "right", "rows": 8},
        "down4": {"edit": "extend", "direction": "down", "rows": 4},
        "fill": {"edit": "fill", "region": [4, 4, 8, 8]},
    }
    for suffix, source in named.items():
        assert storage.edit_suffix(source) == suffix
        folder = RunFolder.create(tmp_path, ["a cat"], suffix=storage.edit_suffix(source), now=NOW)
        assert folder.path.name == f"2024-05-01_123045_a-cat_{suffix}"
    for untrusted in (None, {}, {"edit": "extend", "direction": "../up", "rows": 3},
                      {"edit": "vary", "keep_rows": "8/../x"}, {"edit": "rm -rf"}):
        assert storage.edit_suffix(untrusted) == "", untrusted
    assert RunFolder.create(tmp_path, ["a dog"], now=NOW).path.name == "2024-05-01_123045_a-dog"


def test_one_default_output_place_outside_colab_for_the_cli_and_the_notebooks(tmp_path, monkeypatch):
    from nbkit import places
    from nbkit.notebook import colab

    monkeypatch.delenv("NBKIT_OUTPUT", raising=False)
    monkeypatch.delenv("NBKIT_DRIVE", raising=False)
    for name in [name for name in os.environ if name.startswith("COLAB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(places, "MY_DRIVE", tmp_path / "no-drive" / "MyDrive")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert places.output_root() == tmp_path / "home" / "nbkit" / "outputs"      # wherever it starts
    drive = colab.mount_drive()                                  # what the notebooks save under
    assert drive / "nbkit" / "outputs" == places.output_root() == colab.output_root()
    monkeypatch.setenv("NBKIT_OUTPUT", str(tmp_path / "mine"))
    assert places.output_root() == tmp_path / "mine"
