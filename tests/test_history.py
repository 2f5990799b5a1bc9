"""The persistent render history: entries on disk, thumbnails, owners, pruning, safety."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from engine.errors import InputError
from engine.history import HistoryEntry, HistoryStore

RECIPE = '{"schema_version": 1, "settings": {"seed": 42}}'


def png(outputs: Path, name: str, color: tuple[int, int, int] = (200, 40, 40)) -> Path:
    outputs.mkdir(parents=True, exist_ok=True)
    path = outputs / name
    Image.new("RGB", (32, 24), color).save(path)
    return path


def regrade(store: HistoryStore, entry_id: str, owner: str = "", **kw) -> HistoryEntry:
    args = {"recipe_json": RECIPE, "report_line": "", "notes": [], "label": ""}
    args.update(kw)
    return store.update(
        entry_id, owner=owner, image=args.pop("image", Image.new("RGB", (8, 8))), **args
    )


def keep(store: HistoryStore, path: Path, seed: int = 42, owner: str = "", **kw) -> HistoryEntry:
    args = {
        "recipe_json": RECIPE,
        "report_line": f"ran: base · seed {seed}",
        "notes": ["note one"],
        "label": f"seed {seed} · 32×24",
        "image": Image.new("RGB", (64, 48), (200, 40, 40)),
    }
    args.update(kw)
    return store.add(seed=seed, files=[path], owner=owner, **args)


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(tmp_path / "data" / "history")


def test_add_returns_the_entry_and_writes_its_files(store, outputs):
    path = png(outputs, "a.png")
    entry = keep(store, path)
    assert entry.files == (str(path),)
    assert entry.seed == 42
    assert entry.recipe_json == RECIPE
    assert entry.notes == ("note one",)
    assert entry.label == "seed 42 · 32×24"
    assert entry.owner == ""
    assert entry.created == entry.updated
    assert (store.folder / f"{entry.id}.json").is_file()
    assert entry.thumbnail == str(store.folder / "thumbs" / f"{entry.id}.webp")
    assert Path(entry.thumbnail).is_file()
    assert [p.name for p in store.folder.iterdir() if p.name.startswith(".tmp-")] == []


def test_list_is_newest_first_and_ids_sort_by_time(store, outputs):
    entries = [keep(store, png(outputs, f"{i}.png"), seed=i) for i in range(5)]
    listed = store.list()
    assert [e.seed for e in listed] == [4, 3, 2, 1, 0]
    assert [e.id for e in listed] == sorted((e.id for e in entries), reverse=True)
    assert len({e.id for e in entries}) == 5


def test_a_new_store_on_the_same_folder_sees_the_same_entries(store, outputs):
    first = keep(store, png(outputs, "a.png"), seed=1)
    second = keep(store, png(outputs, "b.png"), seed=2)
    reopened = HistoryStore(store.folder)
    assert reopened.list() == [second, first]
    assert reopened.get(first.id) == first


def test_a_second_store_sees_later_changes_of_the_first(store, outputs):
    other = HistoryStore(store.folder)
    assert other.list() == []
    entry = keep(store, png(outputs, "a.png"))
    assert other.list() == [entry]
    store.delete(entry.id)
    assert other.list() == []


def test_update_keeps_the_id_and_replaces_recipe_and_thumbnail(store, outputs):
    entry = keep(store, png(outputs, "a.png"))
    regraded = '{"schema_version": 1, "color": {"exposure": 0.5}}'
    blue = Image.new("RGB", (64, 48), (0, 0, 255))
    new = regrade(
        store,
        entry.id,
        recipe_json=regraded,
        report_line="ran: color",
        label="regraded",
        image=blue,
    )
    assert new.id == entry.id
    assert new.created == entry.created
    assert new.updated >= entry.updated
    assert (new.recipe_json, new.report_line, new.notes, new.label) == (
        regraded,
        "ran: color",
        (),
        "regraded",
    )
    assert new.files == entry.files and new.seed == entry.seed
    assert new.thumbnail == entry.thumbnail
    with Image.open(new.thumbnail) as thumb:
        r, g, b = thumb.convert("RGB").getpixel((10, 10))
    assert r < 10 and g < 10 and b > 245
    assert HistoryStore(store.folder).list() == [new]


def test_update_can_point_at_new_files(store, outputs):
    entry = keep(store, png(outputs, "a.png"))
    b = png(outputs, "b.png")
    new = regrade(store, entry.id, files=[b])
    assert store.get(entry.id).files == (str(b),) == new.files


def test_delete_removes_entry_and_thumbnail_but_never_the_png(store, outputs):
    path = png(outputs, "a.png")
    entry = keep(store, path)
    assert store.delete(entry.id) == entry
    assert store.list() == []
    assert not (store.folder / f"{entry.id}.json").exists()
    assert not Path(entry.thumbnail).exists()
    assert path.is_file()
    with pytest.raises(InputError, match="no history entry"):
        store.get(entry.id)


def test_an_entry_whose_png_was_deleted_disappears_and_is_pruned(store, outputs):
    kept = keep(store, png(outputs, "a.png"), seed=1)
    gone = keep(store, png(outputs, "b.png"), seed=2)
    Path(gone.files[0]).unlink()
    assert store.list() == [kept]
    assert not (store.folder / f"{gone.id}.json").exists()
    assert not Path(gone.thumbnail).exists()


def test_get_of_an_entry_whose_png_is_gone_says_so(store, outputs):
    entry = keep(store, png(outputs, "a.png"))
    Path(entry.files[0]).unlink()
    with pytest.raises(InputError, match=r"gone from the outputs folder \(a\.png\)"):
        store.get(entry.id)
    assert not (store.folder / f"{entry.id}.json").exists()


def test_a_missing_outputs_folder_hides_entries_without_pruning(store, outputs):
    entry = keep(store, png(outputs, "a.png"))
    moved = outputs.with_name("unmounted")
    outputs.rename(moved)
    assert store.list() == []
    moved.rename(outputs)
    assert store.list() == [entry]


def test_owners_see_only_their_own_entries(store, outputs):
    alice = keep(store, png(outputs, "a.png"), owner="alice")
    bob = keep(store, png(outputs, "b.png"), owner="bob")
    anonymous = keep(store, png(outputs, "c.png"))
    assert store.list("alice") == [alice]
    assert store.list("bob") == [bob]
    assert store.list() == [anonymous]
    for call in (store.get, store.delete):
        with pytest.raises(InputError, match="belongs to another login"):
            call(alice.id, owner="bob")
    with pytest.raises(InputError, match="belongs to another login"):
        regrade(store, alice.id, owner="bob")
    assert store.get(alice.id, owner="alice") == alice


@pytest.mark.parametrize(
    "bad_id", ["../../x", "../outputs/a", "/etc/passwd", "", "20250101-000000-000000-zzzzzzzz"]
)
def test_a_crafted_id_is_refused_before_any_path_is_made(store, outputs, bad_id):
    keep(store, png(outputs, "a.png"))
    for call in (store.get, store.delete):
        with pytest.raises(InputError, match="is not a history entry id"):
            call(bad_id)
    assert (outputs / "a.png").is_file()


def test_a_traversal_id_never_deletes_a_json_file_outside(store, tmp_path, outputs):
    victim = tmp_path / "data" / "victim.json"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("{}")
    with pytest.raises(InputError):
        store.delete("../victim")
    assert victim.read_text() == "{}"


def test_corrupt_and_foreign_json_files_are_skipped_and_logged_once(store, outputs, caplog):
    entry = keep(store, png(outputs, "a.png"))
    (store.folder / "20240101-000000-000000-0000abcd.json").write_text("{not json")
    (store.folder / "20240101-000000-000001-0000abce.json").write_text('{"format": "other"}')
    (store.folder / "20240101-000000-000002-0000abcf.json").write_text("[1, 2]")
    (store.folder / "settings.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="engine.history"):
        assert store.list() == [entry]
        assert store.list() == [entry]
        assert HistoryStore(store.folder).list() == [entry]
    assert len([r for r in caplog.records if r.name == "engine.history"]) == 4 + 4


def test_an_entry_file_naming_another_thumbnail_is_skipped(store, outputs):
    entry = keep(store, png(outputs, "a.png"))
    path = store.folder / f"{entry.id}.json"
    data = json.loads(path.read_text())
    data["thumbnail"] = "../../outputs/a.png"
    path.write_text(json.dumps(data))
    assert HistoryStore(store.folder).list() == []


def test_over_the_limit_the_oldest_entries_are_pruned(tmp_path, outputs):
    store = HistoryStore(tmp_path / "history", limit=3)
    entries = [keep(store, png(outputs, f"{i}.png"), seed=i) for i in range(5)]
    assert [e.seed for e in store.list()] == [4, 3, 2]
    assert [e.seed for e in HistoryStore(store.folder, limit=3).list()] == [4, 3, 2]
    for pruned in entries[:2]:
        assert not (store.folder / f"{pruned.id}.json").exists()
        assert not Path(pruned.thumbnail).exists()
        assert Path(pruned.files[0]).is_file()
    assert len(list((store.folder / "thumbs").iterdir())) == 3


def test_the_limit_counts_each_owner_separately(tmp_path, outputs):
    store = HistoryStore(tmp_path / "history", limit=2)
    keep(store, png(outputs, "a.png"), seed=1, owner="alice")
    for seed in (2, 3, 4):
        keep(store, png(outputs, f"{seed}.png"), seed=seed, owner="bob")
    assert [e.seed for e in store.list("alice")] == [1]
    assert [e.seed for e in store.list("bob")] == [4, 3]


def test_thumbnails_are_at_most_256_on_the_long_side(store, outputs):
    wide = keep(store, png(outputs, "w.png"), image=Image.new("RGB", (600, 300), (9, 9, 9)))
    tall = keep(store, png(outputs, "t.png"), image=Image.new("RGBA", (100, 1000)))
    small = keep(store, png(outputs, "s.png"), image=Image.new("RGB", (40, 30)))
    sizes = []
    for entry in (wide, tall, small):
        with Image.open(entry.thumbnail) as thumb:
            sizes.append((thumb.format, thumb.size))
    assert sizes == [("WEBP", (256, 128)), ("WEBP", (26, 256)), ("WEBP", (40, 30))]


def test_add_refuses_a_missing_png_and_a_bad_recipe(store, outputs):
    with pytest.raises(InputError, match="missing.png is not in the outputs folder"):
        keep(store, outputs / "missing.png")
    with pytest.raises(ValueError):
        keep(store, png(outputs, "a.png"), recipe_json="[1]")
    assert store.list() == []
    assert not (store.folder / "thumbs").exists() or list((store.folder / "thumbs").iterdir()) == []


def test_concurrent_adds_from_threads_all_land(store, outputs):
    paths = [png(outputs, f"{i}.png") for i in range(16)]
    threads = [threading.Thread(target=keep, args=(store, p, i)) for i, p in enumerate(paths)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    listed = store.list()
    assert sorted(e.seed for e in listed) == list(range(16))
    assert len({e.id for e in listed}) == 16


def test_the_module_imports_without_torch_or_gradio():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['gradio'] = None; "
        "import engine.history"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_without_webp_thumbnails_are_jpeg_and_a_regrade_replaces_the_old_file(
    store, outputs, monkeypatch
):
    import engine.history_entry as history_entry

    entry = keep(store, png(outputs, "a.png"))
    monkeypatch.setattr(history_entry, "features", SimpleNamespace(check=lambda name: False))
    new = regrade(store, entry.id, image=Image.new("RGB", (300, 150)))
    assert new.thumbnail == str(store.folder / "thumbs" / f"{entry.id}.jpg")
    assert not Path(entry.thumbnail).exists()
    with Image.open(new.thumbnail) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (256, 128))
    assert HistoryStore(store.folder).list() == [new]
