"""Pre-decoded shards: what goes in comes out, in order, and a mismatch with the captions
is a UserError; scripts/prepare_coco.py writes what scripts/train_caption.py --shards reads."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from captioning.core.data import ImageFiles
from captioning.core.errors import UserError
from captioning.core.shards import ShardedImages, write_shards
from captioning.data import CaptionDataset, collate_captions, load_coco_captions
from tests.conftest import IMAGE_SIZE
from tests.shapes import make_caption_dataset

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def sharded(shapes, tmp_path_factory):
    records, *_ = shapes
    out = write_shards(records, tmp_path_factory.mktemp("shards") / "train", IMAGE_SIZE, workers=2, shard_images=5)
    return records, out


def test_shards_hold_the_decoded_images_in_record_order(sharded):
    records, out = sharded
    images = ShardedImages(out)
    assert len(images) == len(records) and images.size == IMAGE_SIZE
    assert images.image_ids == [r.image_id for r in records]
    assert len(list(out.glob("shard-*.npy"))) == 4  # 18 images, 5 per file
    files = ImageFiles([r.path for r in records], IMAGE_SIZE)
    for i in range(len(records)):
        item = images[i]
        assert item.dtype == np.uint8 and item.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
        np.testing.assert_array_equal(item, files[i])
    with pytest.raises(IndexError):
        images[len(records)]


def test_dataset_from_shards_gives_the_batches_of_the_dataset_from_files(sharded, shapes):
    records, out = sharded
    vocab = shapes[1]
    from_files = CaptionDataset(records, vocab, IMAGE_SIZE)
    from_shards = CaptionDataset(records, vocab, IMAGE_SIZE, images=ShardedImages(out))
    # Two workers: each maps the shard files itself (nothing memory-mapped is pickled).
    a = list(DataLoader(from_files, batch_size=6, collate_fn=collate_captions))
    b = list(DataLoader(from_shards, batch_size=6, collate_fn=collate_captions, num_workers=2))
    for x, y in zip(a, b):
        assert torch.equal(x.images, y.images) and torch.equal(x.captions, y.captions) and x.image_ids == y.image_ids


def test_shards_that_do_not_match_the_captions_are_refused(sharded, shapes):
    records, out = sharded
    vocab = shapes[1]
    images = ShardedImages(out)
    with pytest.raises(UserError, match="image 0 is id"):
        CaptionDataset(records[::-1], vocab, IMAGE_SIZE, images=images)
    with pytest.raises(UserError, match="18 images but 17"):
        CaptionDataset(records[:-1], vocab, IMAGE_SIZE, images=images)
    with pytest.raises(UserError, match="--size 64"):
        CaptionDataset(records, vocab, 64, images=images)


def test_select_finds_images_by_id_in_any_order(sharded, shapes, tmp_path):
    """Shards of one record order serve records in another order, or a subset (VQA v2 over the
    shards of COCO's caption file); ids the shards lack, or reused by another folder, are refused."""
    records, out = sharded
    vocab = shapes[1]
    wanted = records[::-2]  # every other image, last first
    chosen = ShardedImages(out).select(wanted)
    assert chosen.image_ids == [r.image_id for r in wanted] and len(chosen) == len(wanted)
    files = ImageFiles([r.path for r in wanted], IMAGE_SIZE)
    for i in range(len(wanted)):
        np.testing.assert_array_equal(chosen[i], files[i])
    CaptionDataset(wanted, vocab, IMAGE_SIZE, images=chosen)  # passes the positional check
    stranger = type(records[0])(424242, records[0].path, ["a caption"])
    with pytest.raises(UserError, match="1 of 2 images are not in the shards .first: id 424242"):
        ShardedImages(out).select([records[0], stranger])
    renamed = type(records[0])(records[0].image_id, tmp_path / "other.png", ["a caption"])
    with pytest.raises(UserError, match=f"image id {records[0].image_id} is {records[0].path.name} in the shards but other.png"):
        ShardedImages(out).select([renamed])


def test_unfinished_or_damaged_shard_folders_are_user_errors(sharded, tmp_path):
    records, out = sharded
    with pytest.raises(UserError, match="no index.json"):
        ShardedImages(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    index = json.loads((out / "index.json").read_text())
    (broken / "index.json").write_text(json.dumps(index))
    for s in index["shards"]:
        (broken / s["file"]).write_bytes(b"not numpy")
    with pytest.raises(UserError, match="not a readable shard"):
        ShardedImages(broken)[0]
    (broken / index["shards"][0]["file"]).unlink()
    with pytest.raises(UserError, match="shard file missing"):
        ShardedImages(broken)
    bad = records[:2] + [type(records[0])(99, tmp_path / "missing.jpg", ["a caption"])]
    with pytest.raises(UserError, match="no such file"):
        write_shards(bad, tmp_path / "bad", IMAGE_SIZE, workers=2)
    assert not (tmp_path / "bad" / "index.json").exists()


def test_prepare_coco_writes_what_train_caption_reads(tmp_path):
    train_ann, train_dir = make_caption_dataset(tmp_path / "train", n_images=8, seed=0, name="train")
    val_ann, val_dir = make_caption_dataset(tmp_path / "val", n_images=4, seed=1, name="val")
    shards = tmp_path / "shards"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_coco.py"), "--images", train_dir,
                        "--captions", train_ann, "--val-images", val_dir, "--val-captions", val_ann,
                        "--out", shards, "--size", str(IMAGE_SIZE), "--workers", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for split, ann, img_dir in (("train", train_ann, train_dir), ("val", val_ann, val_dir)):
        records = load_coco_captions(ann, img_dir)
        images = ShardedImages(shards / split)
        assert images.image_ids == [r.image_id for r in records]
        np.testing.assert_array_equal(images[len(records) - 1], ImageFiles([records[-1].path], IMAGE_SIZE)[0])
    # The training script trains from them (no JPEG is read: the images are gone).
    for p in list(train_dir.iterdir()) + list(val_dir.iterdir()):
        p.unlink()
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_caption.py"), "--images", train_dir,
                        "--captions", train_ann, "--val-images", val_dir, "--val-captions", val_ann,
                        "--shards", shards, "--image-size", str(IMAGE_SIZE), "--min-word-count", "1",
                        "--embed-dim", "16", "--hidden-dim", "16", "--attention-dim", "16", "--epochs", "1",
                        "--batch-size", "4", "--num-workers", "0", "--progress", "false", "--out", tmp_path / "run"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "last.safetensors").exists()
    # Shards of other captions are refused before anything is trained, cached features or not.
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_caption.py"), "--images", val_dir,
                        "--captions", val_ann, "--shards", shards, "--image-size", str(IMAGE_SIZE),
                        "--cache-features", tmp_path / "cache", "--out", tmp_path / "run2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "4 of 4 images are not in the shards" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "cache").exists()
