"""Answer a VQA v2 split with a model and score it with the official VQA accuracy, or score a results file.

    # answer every question, write the official results file, score it
    python scripts/evaluate_vqa.py --checkpoint runs/vqa/best.safetensors \
        --questions v2_OpenEnded_mscoco_val2014_questions.json \
        --annotations v2_mscoco_val2014_annotations.json --images COCO/val2014 --results-out results.json
    # test-dev: no annotations, so the results file is written and not scored
    python scripts/evaluate_vqa.py --questions v2_OpenEnded_mscoco_test-dev2015_questions.json --images COCO/test2015
    # score an existing results file [{"question_id", "answer"}]
    python scripts/evaluate_vqa.py --questions Q.json --annotations A.json --results results.json --json

Without --checkpoint, the shipped default model answers. --json prints one JSON object with
the official names ``overall``, ``perAnswerType`` and ``perQuestionType`` (percentages).
--protocol picks the version of the official code: 2021 (today's, the default) or 2016
(for comparing with numbers published before 2021); see vqa.metric.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from captioning.core.checkpoint import CHECKPOINT_DIR
from captioning.core.commandline import (
    add_precision_arg,
    add_skip_bad_images_arg,
    announce_default,
    device_from_arg,
    positive_int,
    run,
    without_unreadable,
)
from captioning.core.errors import UserError
from captioning.core.fileio import write_json
from captioning.core.grounding import ground_questions, load_instances
from vqa.api import VQAModel
from vqa.data import load_vqa
from vqa.evaluation import answer_dataset
from vqa.metric import DEFAULT_PROTOCOL, PROTOCOLS, evaluate, evaluate_files

PROG = "evaluate_vqa"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", required=True, help="a VQA questions file (v2_OpenEnded_mscoco_*_questions.json)")
    p.add_argument("--annotations", help="its annotations file (v2_mscoco_*_annotations.json); without: answer only")
    p.add_argument("--results", help="score this results file instead of answering with a model")
    p.add_argument("--images", help="the split's image folder (with a model)")
    p.add_argument("--checkpoint", help="a VQA checkpoint (default: the shipped one)")
    p.add_argument("--results-out", help="where to write the results file (default: in the training run's folder "
                   "of --checkpoint, as vqa_OpenEnded_mscoco_<subtype>_<checkpoint>_results.json, the official naming; "
                   "never the current folder; the shipped checkpoints' answers are written only when asked)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    add_precision_arg(p, default="fp32")
    p.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                   help="which version of the official vqaEval.py to score with: 2021, the current one "
                   "(commit a013f00), or 2016 (commit 458a8b2), for numbers published before 2021 "
                   f"(default {DEFAULT_PROTOCOL})")
    p.add_argument("--instances", help="COCO instances of the split's images (instances_<split>.json of "
                   "scripts/prepare_scenes.py): also score the attention fusion's glimpses on the questions about one "
                   "object (annotations with one instance_ids entry) against its box, beside a uniform map's")
    add_skip_bad_images_arg(p)
    p.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    return p


def answer_split(args, attention: dict | None = None) -> tuple[list[dict], list[dict], list[dict] | None]:
    """Answer every question with the model: (results, questions, annotations or None); the
    attention fusion's glimpses go into ``attention`` when given."""
    if not args.images:
        raise UserError("answering with a model needs --images (or pass --results to score a results file)")
    vqa = VQAModel.from_pretrained(args.checkpoint, device=device_from_arg(args.device), precision=args.precision)
    path = vqa.checkpoint
    if vqa.is_default:
        announce_default(PROG, path, vqa.extra)
    if attention is not None and vqa.model.cfg.fusion.name != "attention":
        raise UserError(f"--instances scores attention maps, and this model's fusion is {vqa.model.cfg.fusion.name}")
    split = load_vqa(args.questions, args.annotations, args.images, check_images=False)
    split = split.restricted_to(without_unreadable(PROG, split.records, args.skip_bad_images))
    results = answer_dataset(vqa.model, vqa.answer_vocab, vqa.dataset(split.records), batch_size=args.batch_size,
                             device=vqa.device, num_workers=args.num_workers, precision=vqa.precision,
                             attention=attention)
    out = results_path(args.results_out, path, split.data_subtype)
    if out is None:
        print(f"{PROG}: the answers are not kept (a shipped checkpoint has no run folder): pass --results-out FILE "
              "to write them", file=sys.stderr)
    else:
        write_json(out, results, indent=None)
        print(f"{PROG}: wrote {len(results)} answers to {out}", file=sys.stderr)
    return results, split.questions, split.annotations


def results_path(results_out: str | None, checkpoint: Path, data_subtype: str | None) -> Path | None:
    """Where the official results file goes: ``--results-out``, else the folder of the training
    run that made ``checkpoint`` under the official name, never the current folder (run from
    the repository, that was the source tree). A shipped checkpoint (``checkpoints/``) has
    no run folder: then nothing is written unless asked."""
    if results_out:
        return Path(results_out)
    if checkpoint.resolve().parent == CHECKPOINT_DIR.resolve():
        return None
    return checkpoint.parent / f"vqa_OpenEnded_mscoco_{data_subtype or 'split'}_{checkpoint.stem}_results.json"


def report(scores: dict, as_json: bool) -> None:
    if as_json:
        keys = ("overall", "perAnswerType", "perQuestionType", "num_questions", "protocol", "grounding")
        print(json.dumps({k: scores[k] for k in keys if k in scores}))
        return
    print(f"overall accuracy: {scores['overall']:.2f} ({scores['num_questions']} questions, "
          f"official code of {scores['protocol']})")
    for answer_type, value in sorted(scores["perAnswerType"].items()):
        print(f"  {answer_type}: {value:.2f}")
    for question_type, glimpses in scores.get("grounding", {}).items():
        for g, s in enumerate(glimpses):
            print(f"  glimpse {g + 1} on {question_type!r} ({s['count']} questions): attention correctness "
                  f"{s['correctness']:.3f} (uniform {s['uniform_correctness']:.3f}), pointing {100 * s['pointing']:.1f}% "
                  f"(uniform {100 * s['uniform_pointing']:.1f}%)")


def main(args) -> int:
    if args.results:
        if not args.annotations:
            raise UserError("scoring a results file needs --annotations")
        if args.checkpoint or args.images or args.instances:
            raise UserError("--results scores an existing file: leave out --checkpoint, --images and --instances")
        report(evaluate_files(args.results, args.questions, args.annotations, args.protocol), args.json)
        return 0
    if args.instances and not args.annotations:
        raise UserError("--instances needs --annotations (they say which object each question is about)")
    instances = load_instances(args.instances) if args.instances else None  # a bad file fails before answering
    attention = {} if instances else None
    results, questions, annotations = answer_split(args, attention)
    if annotations is None:
        print(f"{PROG}: no --annotations, so nothing is scored", file=sys.stderr)
        return 0
    scores = evaluate(results, questions, annotations, protocol=args.protocol)
    if instances:
        scores["grounding"] = {k: [s.to_json() for s in v]
                               for k, v in ground_questions(instances, annotations, attention).items()}
    report(scores, args.json)
    return 0


if __name__ == "__main__":
    parsed = get_args_parser().parse_args()
    sys.exit(run(PROG, lambda: main(parsed)))
