"""Live items' blocks shared between workers (recsys.model.live_share): what one worker made
reads back the same, an edit or a replaced photo is never served from an old file, and a
damaged file is made again."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from PIL import Image

from recsys.model.live_share import SharedBlocks


@pytest.fixture
def shared(tmp_path):
    return SharedBlocks(tmp_path / "live-blocks", "v1", "tabular+image")


def frame(title: str = "Red shoe", photo: str | None = None, in_stock: bool = True):
    return pd.DataFrame(
        {
            "item_id": ["s1"],
            "title": [title],
            "image_path": [photo],
            "in_stock": [in_stock],
            "brand": ["acme"],
            "price": [np.nan],
        }
    )


def test_blocks_read_back_as_they_were_written(shared):
    blocks = {"tabular": np.array([[0.6, 0.8]], np.float32), "cf": np.ones((1, 3), np.float32)}
    tokens = sp.csr_matrix(np.array([[0, 0.5, 0, 0.5]], np.float32))
    digests = shared.digests(frame())
    assert shared.read(["s1"], digests) == [None]
    shared.write(["s1"], digests, blocks, tokens)
    [(read, read_tokens)] = shared.read(["s1"], digests)
    assert read.keys() == blocks.keys()
    for name in blocks:
        np.testing.assert_array_equal(read[name], blocks[name][0])
    np.testing.assert_array_equal(read_tokens.toarray(), tokens.toarray())


def test_each_item_of_a_batch_reads_back_its_own_rows(shared):
    items = pd.concat([frame("Red shoe"), frame("Blue hat"), frame("Green bag")])
    items["item_id"] = ["s1", "s2", "s3"]
    blocks = {"tabular": np.arange(6, dtype=np.float32).reshape(3, 2)}
    tokens = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 0], [2, 0, 3]], np.float32))
    digests = shared.digests(items)
    shared.write(["s1", "s2", "s3"], digests, blocks, tokens)
    for k, (read, read_tokens) in enumerate(shared.read(["s1", "s2", "s3"], digests)):
        np.testing.assert_array_equal(read["tabular"], blocks["tabular"][k])
        np.testing.assert_array_equal(read_tokens.toarray(), tokens[k].toarray())


def test_an_edit_or_a_replaced_photo_changes_the_digest_a_stock_change_does_not(shared, tmp_path):
    photo = tmp_path / "p.png"
    Image.new("L", (8, 8), 10).save(photo)
    before = shared.digests(frame(photo=str(photo)))
    assert shared.digests(frame(photo=str(photo), in_stock=False)) == before
    assert shared.digests(frame("Blue shoe", photo=str(photo))) != before
    Image.new("L", (9, 9), 200).save(photo)  # another photo under the same path
    assert shared.digests(frame(photo=str(photo))) != before


def test_a_damaged_file_reads_as_missing(shared):
    digests = shared.digests(frame())
    shared.write(["s1"], digests, {"tabular": np.ones((1, 2), np.float32)}, None)
    [path] = shared.folder.rglob("*.blocks")
    path.write_bytes(b"not an npz")
    assert shared.read(["s1"], digests) == [None]


def test_pruning_keeps_this_bundles_folder_and_those_of_bundles_still_there(tmp_path):
    """Versions gone from the artifacts folder go; one whose bundle is still there stays
    (another catalog's, in an artifacts folder several share: a service's restart removed
    the other's live blocks)."""
    root = tmp_path / "live-blocks"
    (tmp_path / "bundles" / "w1").mkdir(parents=True)  # another catalog's bundle
    made = [SharedBlocks(root, v, "tabular") for v in ("v0", "w1", "v1")]
    for one in made:
        one.write(["s1"], one.digests(frame()), {"tabular": np.ones((1, 2), np.float32)}, None)
    made[-1].prune_others()
    assert sorted(p.name for p in root.iterdir()) == ["v1", "w1"]
    assert made[-1].read(["s1"], made[-1].digests(frame()))[0] is not None


def test_a_folder_removed_under_a_running_worker_is_made_again(shared):
    blocks = {"tabular": np.ones((1, 2), np.float32)}
    shared.write(["s1"], shared.digests(frame()), blocks, None)
    shutil.rmtree(shared.root)  # e.g. /dev/shm cleaned while the service runs
    shared.write(["s1"], shared.digests(frame("Blue shoe")), blocks, None)
    assert shared.read(["s1"], shared.digests(frame("Blue shoe")))[0] is not None


def test_a_folder_that_cannot_be_written_costs_only_the_sharing(tmp_path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    shared = SharedBlocks(blocked, "v1", "tabular")  # its folder would be under a file
    blocks = {"tabular": np.ones((1, 2), np.float32)}
    for _ in range(3):
        shared.write(["s1"], shared.digests(frame()), blocks, None)
    assert shared.read(["s1"], shared.digests(frame())) == [None]
    assert sum("cannot share blocks" in r.message for r in caplog.records) == 1


def test_an_items_file_of_an_earlier_edit_goes_when_its_next_edit_is_met(shared):
    """A file per edit of an item piled up until the next bundle (10 MB an hour in a soak);
    another item's stays."""
    blocks = {"tabular": np.ones((1, 2), np.float32)}
    for title in ("Red shoe", "Blue shoe"):
        digests = shared.digests(frame(title))
        shared.read(["s1"], digests)
        shared.write(["s1"], digests, blocks, None)
    other = shared.digests(frame("Green hat"))
    shared.read(["s2"], other)
    shared.write(["s2"], other, blocks, None)
    assert len(list(shared.folder.rglob("*.blocks"))) == 2
    assert shared.read(["s1"], shared.digests(frame("Blue shoe")))[0] is not None
