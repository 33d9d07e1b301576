"""Attention correctness and the pointing game on hand-made maps and boxes with known answers."""

import json

import numpy as np
import pytest
import torch

from captioning.core.errors import UserError
from captioning.core.grounding import (
    AttentionTargets,
    GroundingTally,
    Instances,
    attention_correctness,
    attention_supervision_loss,
    cell_coverage,
    load_instances,
    pointing_hit,
    score_caption_words,
    word_categories,
)

SIZE = (40, 40)  # a 4 x 4 grid of 10 px cells


def test_coverage_of_a_box_on_cell_edges_and_across_cells():
    cover = cell_coverage([[10, 0, 20, 10]], (4, 4), SIZE)  # exactly cells (0, 1) and (0, 2)
    expected = np.zeros((4, 4))
    expected[0, 1:3] = 1
    assert np.allclose(cover, expected)
    cover = cell_coverage([[5, 5, 10, 10]], (4, 4), SIZE)  # a quarter of each of four cells
    assert np.allclose(cover[:2, :2], 0.25) and cover.sum() == pytest.approx(1.0)


def test_coverage_of_overlapping_boxes_counts_the_union_once_and_clips_to_the_picture():
    cover = cell_coverage([[0, 0, 10, 10], [5, 0, 10, 10], [35, 35, 50, 50]], (4, 4), SIZE)
    assert cover[0, 0] == pytest.approx(1.0) and cover[0, 1] == pytest.approx(0.5)
    assert cover[3, 3] == pytest.approx(0.25) and cover.sum() == pytest.approx(1.75)


def test_attention_correctness_known_values():
    alpha = np.zeros((4, 4))
    alpha[0, 0], alpha[3, 3] = 0.75, 0.25
    assert attention_correctness(alpha, [[0, 0, 10, 10]], SIZE) == pytest.approx(0.75)
    assert attention_correctness(alpha, [[0, 0, 5, 10]], SIZE) == pytest.approx(0.375)  # half the cell
    assert attention_correctness(alpha * 8, [[0, 0, 10, 10]], SIZE) == pytest.approx(0.75)  # unnormalised
    uniform = np.ones((4, 4))
    assert attention_correctness(uniform, [[0, 0, 20, 20]], SIZE) == pytest.approx(0.25)  # area share
    with pytest.raises(ValueError):
        attention_correctness(np.zeros((4, 4)), [[0, 0, 10, 10]], SIZE)


def test_pointing_uses_the_argmax_cell_centre_and_shares_ties():
    alpha = np.full((4, 4), 0.01)
    alpha[1, 2] = 0.5  # centre (25, 15)
    assert pointing_hit(alpha, [[20, 10, 10, 10]], SIZE) == 1.0
    assert pointing_hit(alpha, [[26, 10, 10, 10]], SIZE) == 0.0  # covers most of the cell, misses its centre
    assert pointing_hit(alpha, [[0, 0, 5, 5], [25, 15, 1, 1]], SIZE) == 1.0  # edge included, any box
    assert pointing_hit(np.ones((4, 4)), [[0, 0, 20, 20]], SIZE) == pytest.approx(0.25)  # 4 of 16 centres
    tie = np.zeros((4, 4))
    tie[0, 0] = tie[3, 3] = 1
    assert pointing_hit(tie, [[0, 0, 10, 10]], SIZE) == 0.5


def test_tally_means_and_uniform_baseline():
    tally = GroundingTally()
    hit = np.zeros((4, 4))
    hit[0, 0] = 1
    tally.add(hit, [[0, 0, 10, 10]], SIZE)  # correctness 1, pointing 1
    tally.add(np.ones((4, 4)), [[0, 0, 20, 20]], SIZE)  # 0.25, 0.25
    s = tally.score()
    assert s.count == 2
    assert (s.correctness, s.pointing) == (pytest.approx(0.625), pytest.approx(0.625))
    assert s.uniform_correctness == pytest.approx((1 / 16 + 0.25) / 2)
    assert s.uniform_pointing == pytest.approx((1 / 16 + 0.25) / 2)


def test_word_categories_drop_shared_and_stop_words():
    words = word_categories({1: "dog face", 2: "cat face", 3: "red apple", 4: "cup of tea"})
    assert words == {"dog": 1, "cat": 2, "red": 3, "apple": 3, "cup": 4, "tea": 4}


def test_score_caption_words_only_objects_present(tmp_path):
    alphas = np.zeros((3, 4, 4))
    alphas[:, 0, 0] = 1  # every word looks at the top-left cell
    tally = GroundingTally()
    n = score_caption_words(tally, ["a", "dog", "cat"], alphas, {1: [[0, 0, 10, 10]]}, SIZE, {"dog": 1, "cat": 2})
    assert n == 1 and tally.score().correctness == 1.0  # "cat" is not in the picture: not scored


def test_load_instances_reads_coco_and_rejects_other_files(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "7.png", "width": 40, "height": 30}],
        "annotations": [{"id": 70, "image_id": 7, "category_id": 2, "bbox": [1, 2, 3, 4], "area": 12, "iscrowd": 0}],
        "categories": [{"id": 2, "name": "dog"}]}))
    inst = load_instances(path)
    assert inst.categories == {2: "dog"} and inst.boxes[7] == {2: [[1.0, 2.0, 3.0, 4.0]]}
    assert inst.sizes[7] == (40, 30) and inst.by_id[70] == (7, 2, [1.0, 2.0, 3.0, 4.0])
    bad = tmp_path / "captions.json"
    bad.write_text(json.dumps({"images": [], "annotations": [{"id": 1, "image_id": 1, "caption": "x"}]}))
    with pytest.raises(UserError):
        load_instances(bad)


def _run(capsys, name, *args):
    from captioning.core.commandline import run
    from tests.conftest import load_script

    script = load_script(name)
    code = run(name, lambda: script.main(script.get_args_parser().parse_args([str(a) for a in args])))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_scripts_score_maps_against_scene_boxes(tmp_path, capsys):
    """Both evaluation scripts with --instances on tiny scenes of fake artwork and the shipped
    checkpoints (which never saw a scene: the point is that the measures come out, in range,
    beside the uniform baseline, and that bad combinations are refused in one line)."""
    from pathlib import Path

    from captioning.datasets.scenes import build_scenes
    from tests.captioning.datasets.test_scenes import make_packages

    root = Path(__file__).resolve().parents[3]
    data = tmp_path / "scenes"
    build_scenes(make_packages(tmp_path / "packages"), data, {"test": 4}, seed=0, num_seen=8, num_held_out=3)
    inst = data / "instances_test.json"
    code, out, err = _run(capsys, "evaluate_caption", "--captions", data / "captions_test.json", "--images",
                          data / "images" / "test", "--instances", inst, "--beam-size", "1", "--no-meteor", "--json",
                          "--checkpoint", root / "checkpoints" / "caption_emoji.safetensors")
    assert code == 0, err
    scores = json.loads(out)
    for key in ("attention_correctness", "pointing", "uniform_attention_correctness", "uniform_pointing"):
        assert 0 <= scores[key] <= 1
    assert scores["grounded_maps"] >= 0
    code, out, err = _run(capsys, "evaluate_vqa", "--questions", data / "v2_OpenEnded_mscoco_test_questions.json",
                          "--annotations", data / "v2_mscoco_test_annotations.json", "--images", data / "images" / "test",
                          "--instances", inst, "--json", "--num-workers", "0", "--results-out", tmp_path / "res.json",
                          "--checkpoint", root / "checkpoints" / "vqa_easy_vqa_attention.safetensors")
    assert code == 0, err
    grounding = json.loads(out)["grounding"]
    assert len(grounding["all"]) == 2  # one score per glimpse
    assert grounding["all"][0]["count"] == sum(v[0]["count"] for k, v in grounding.items() if k != "all") > 0
    assert 0 < grounding["all"][0]["uniform_correctness"] < 1
    code, _, err = _run(capsys, "evaluate_vqa", "--questions", data / "v2_OpenEnded_mscoco_test_questions.json",
                        "--images", data / "images" / "test", "--instances", inst)
    assert code == 2 and err.count("\n") == 1 and "--annotations" in err
    code, _, err = _run(capsys, "evaluate_caption", "--captions", data / "captions_test.json", "--images",
                        data / "images" / "test", "--instances", data / "captions_test.json")
    assert code == 2 and err.count("\n") == 1 and "COCO instances" in err


def _two_pictures() -> Instances:
    """Picture 1: a dog in the top-left 10 x 10 px cell and a cat over the right half; picture 2: a cat only."""
    return Instances({1: "dog", 2: "cat"}, {1: {1: [[0, 0, 10, 10]], 2: [[20, 0, 20, 40]]}, 2: {2: [[0, 0, 40, 40]]}},
                     {}, {1: SIZE, 2: SIZE})


def test_attention_targets_are_the_named_objects_box_cover():
    words = ["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "cat"]
    targets = AttentionTargets(_two_pictures(), words, (4, 4))
    captions = torch.tensor([[1, 4, 5, 6, 2], [1, 5, 6, 2, 0]])  # "a dog cat", "dog cat"
    target, mask = targets(captions, torch.tensor([0, 1]), [1, 2])  # caption 0 of picture 1, caption 1 of picture 2
    assert target.shape == (2, 4, 16)
    # picture 1: "a" names nothing, "dog" its one cell, "cat" the right half (8 cells); picture 2 has no dog
    assert mask.tolist() == [[False, True, True, False], [False, True, False, False]]
    assert target[0, 1].reshape(4, 4)[0, 0] == 1 and target[0, 1].sum() == 1
    np.testing.assert_allclose(target[0, 2].reshape(4, 4).numpy(), np.tile([0, 0, 1 / 8, 1 / 8], (4, 1)))
    np.testing.assert_allclose(target[1, 1].numpy(), np.full(16, 1 / 16))  # the cat fills picture 2
    uniform = torch.full((2, 4, 16), 1 / 16)
    # -log(1/16) for each of the three supervised words
    assert attention_supervision_loss(uniform, target, mask).item() == pytest.approx(np.log(16))
    assert attention_supervision_loss(uniform, target, torch.zeros_like(mask)).item() == 0
    # power 2: a box half over a cell gives it a quarter of a full cell's weight
    sharp, _ = AttentionTargets(Instances({1: "dog"}, {1: {1: [[0, 0, 15, 10]]}}, {}, {1: SIZE}), words, (4, 4), 2.0)(
        captions[:1], torch.tensor([0]), [1])
    np.testing.assert_allclose(sharp[0, 1].reshape(4, 4)[0, :2].numpy(), [0.8, 0.2])


def test_supervision_moves_a_decoders_attention_onto_the_box():
    """Minimising the supervision alone takes a decoder's map of "dog" from about uniform to
    mostly inside the dog's cell: the gradient reaches the attention through the real decoder."""
    from captioning.decoder import AttentionDecoder, DecoderConfig

    torch.manual_seed(0)
    words = ["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "cat"]
    targets = AttentionTargets(_two_pictures(), words, (4, 4))
    dec = AttentionDecoder(DecoderConfig(vocab_size=len(words), feature_dim=8, embed_dim=8, hidden_dim=16,
                                         attention_dim=8, dropout=0.0))
    features = torch.randn(1, 16, 8)  # picture 1's grid
    captions, lengths = torch.tensor([[1, 4, 5, 2]]), torch.tensor([4])
    target, mask = targets(captions, torch.tensor([0]), [1])
    opt = torch.optim.Adam(dec.parameters(), lr=0.05)

    def dog_correctness() -> float:
        with torch.no_grad():
            _, alphas = dec(features, captions, lengths)
        return attention_correctness(alphas[0, 1].reshape(4, 4).numpy(), [[0, 0, 10, 10]], SIZE)

    before = dog_correctness()
    for _ in range(60):
        _, alphas = dec(features, captions, lengths)
        loss = attention_supervision_loss(alphas, target, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before < 0.2 and dog_correctness() > 0.8


def test_train_caption_supervises_attention_with_the_training_boxes(tmp_path, capsys):
    """train_caption.py --instances --attention-supervision on tiny scenes: the term is trained
    and logged; either half alone is refused in one line."""
    import csv
    from pathlib import Path

    from captioning.datasets.scenes import build_scenes
    from tests.captioning.datasets.test_scenes import make_packages

    data = tmp_path / "scenes"
    build_scenes(make_packages(tmp_path / "packages"), data, {"train": 6}, seed=0, num_seen=8, num_held_out=3)
    common = ["--images", data / "images" / "train", "--captions", data / "captions_train.json", "--image-size", "64",
              "--embed-dim", "8", "--hidden-dim", "16", "--attention-dim", "8", "--epochs", "2", "--batch-size", "3",
              "--num-workers", "0", "--progress", "false", "--min-word-count", "1"]
    out = tmp_path / "run"
    code, _, err = _run(capsys, "train_caption", *common, "--instances", data / "instances_train.json",
                        "--attention-supervision", "1", "--out", out)
    assert code == 0, err
    rows = list(csv.DictReader(Path(out / "log.csv").open()))
    assert len(rows) == 2 and all(float(r["train_sup"]) > 0 for r in rows)
    for flags in (["--instances", data / "instances_train.json"], ["--attention-supervision", "1"]):
        code, _, err = _run(capsys, "train_caption", *common, *flags, "--out", tmp_path / "refused")
        assert code == 2 and err.count("\n") == 1 and "--instances" in err, err
