"""``explore``: the attention explorer as a local web app.

A page where you drop or pick images and get the explorer of ``captioning.core.report`` for
each (the caption, each word's probability and attention map, the beam alternatives), and ask
questions about an image (the VQA model's answers and attention glimpses). Standard library
only (``http.server``); the page is the report's own template, filled by ``fetch`` calls.

Safe by default: it binds 127.0.0.1 and, bound there, answers only requests addressed to a
local host name (a web page elsewhere cannot reach it by rebinding its DNS name); uploads
over ``--max-upload-mb`` or that are not images are refused with a 4xx and a message the
page shows; requests run in threads, the models behind one lock; uploads live in a temporary
folder removed on exit, the newest ``KEEP_UPLOADS`` only; models load on first use.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import secrets
import signal
import sys
import tempfile
import threading
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from captioning.core.commandline import add_precision_arg, device_from_arg, positive_int, run
from captioning.core.errors import UserError

PROG = "explore"
MAX_UPLOAD_MB = 20  # a phone photo is 3-10 MB; the model sees 224 px of it anyway
KEEP_UPLOADS = 64  # images kept for questions; older ones are deleted
MAX_BEAM = 10
MAX_QUESTION_BYTES = 4096


class HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class Models:
    """The captioner and the VQA model, each loaded on first use, used under one lock."""

    def __init__(self, caption_checkpoint: Path, vqa_checkpoint: Path | None, device, precision: str,
                 instances=None):
        self.paths = {"caption": caption_checkpoint, "vqa": vqa_checkpoint}
        self.device, self.precision = device, precision
        self.instances = instances  # captioning.core.grounding.Instances: boxes of annotated images, by file name
        self.lock = threading.Lock()
        self._captioner = self._vqa = None

    def _annotate(self, item: dict, name: str, extra: dict | None) -> dict:
        """The model's training data, and the boxes of an image the instances file names."""
        from captioning.core.report import annotate

        image_id = self.instances.file_names.get(Path(name).name) if self.instances else None
        boxes = self.instances.labelled_boxes(image_id) if image_id is not None else []
        return annotate(item, boxes, self.instances.sizes.get(image_id) if boxes else None,
                        (extra or {}).get("trained_on"))

    def caption(self, image, name: str, beam_size: int) -> dict:
        with self.lock:
            if self._captioner is None:
                from captioning.api import Captioner

                self._captioner = Captioner.from_pretrained(self.paths["caption"], self.device, self.precision)
            result = self._captioner(image, beam_size=beam_size)
            item = self._captioner.report_item(image, result, name)
        return self._annotate(item, name, self._captioner.extra)

    def answer(self, image, name: str, question: str) -> dict:
        if self.paths["vqa"] is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, "this server has no VQA model (start it with --vqa-checkpoint)")
        from captioning.core.report import vqa_item

        with self.lock:
            if self._vqa is None:
                from vqa.api import VQAModel

                self._vqa = VQAModel.from_pretrained(self.paths["vqa"], self.device, self.precision)
            with warnings.catch_warnings():  # the page shows them (prediction.warnings), as the CLI prints them
                warnings.simplefilter("ignore", UserWarning)
                prediction = self._vqa.predict(image, question, top_k=5)
        item = vqa_item(image, name, prediction.question, prediction.answers, prediction.attention,
                        prediction.warnings)
        return self._annotate(item, name, self._vqa.extra)


def model_card(path: Path, kind: str) -> dict:
    """What the page says about a model, from its checkpoint's metadata: its file, what it was
    trained on and what it can say. Reading it also refuses, at start, a file that is not a
    ``kind`` checkpoint (one line, exit 2), instead of failing every request later."""
    from captioning.core.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path, kind)
    trained_on = ckpt.extra.get("trained_on") or "unrecorded data (the checkpoint does not say)"
    try:
        if kind == "caption":
            words = [w for w in ckpt.vocab["words"] if not (w.startswith("<") and w.endswith(">"))]
            return {"task": "captioner", "file": path.name, "trained_on": trained_on,
                    "can": f"captions made of the {len(words):,} words of its vocabulary only"}
        answers = list(ckpt.vocab["answers"]["answers"])
        words = [w for w in ckpt.vocab["questions"]["words"] if any(c.isalnum() for c in w) and w[0] != "<"]
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: checkpoint vocabulary is not valid ({type(e).__name__}: {e})") from None
    return {"task": "question answering", "file": path.name, "trained_on": trained_on,
            "can": f"one of {len(answers)} answers ({', '.join(answers)}), to questions in the {len(words)} words it "
                   f"knows ({', '.join(words)})" if len(words) <= 60 else
                   f"one of {len(answers)} answers ({', '.join(answers[:40])}{', ...' if len(answers) > 40 else ''}), "
                   f"to questions in the {len(words):,} words it knows"}


class Uploads:
    """Uploaded images in a temporary folder, by random id, the newest ``keep`` only."""

    def __init__(self, folder: Path, keep: int = KEEP_UPLOADS):
        self.folder, self.keep = folder, keep
        self.lock = threading.Lock()
        self.files: OrderedDict[str, tuple[Path, str]] = OrderedDict()

    def add(self, data: bytes, name: str):
        """-> (id, image); an unreadable image raises UserError naming the upload, not our file."""
        from captioning.core.images import read_image

        image_id = secrets.token_hex(8)
        path = self.folder / image_id
        path.write_bytes(data)
        try:
            image = read_image(path)
        except UserError as e:
            path.unlink(missing_ok=True)
            raise UserError(str(e).replace(str(path), name)) from None
        with self.lock:
            self.files[image_id] = (path, name)
            while len(self.files) > self.keep:
                _, (old, _) = self.files.popitem(last=False)
                old.unlink(missing_ok=True)
        return image_id, image

    def get(self, image_id: str):
        from captioning.core.images import read_image

        with self.lock:
            entry = self.files.get(image_id)
        if entry is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, "that image is no longer on the server: upload it again")
        path, name = entry
        return read_image(path), name


class ExplorerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], models: Models, folder: Path, max_upload_bytes: int,
                 cards: list[dict] = ()):
        """``cards``: what the page says about each model (:func:`model_card`)."""
        super().__init__(address, Handler)
        self.models, self.uploads, self.max_upload_bytes = models, Uploads(folder), max_upload_bytes
        self.local_only = _is_loopback(address[0])
        from captioning.core.report import render_page

        self.page = render_page([], "Attention explorer", server={
            "vqa": models.paths["vqa"] is not None, "max_bytes": max_upload_bytes, "models": list(cards)}).encode("utf-8")

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: ExplorerServer
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self._answer(self._get)

    def do_POST(self):
        self._answer(self._post)

    def _get(self):
        if urlsplit(self.path).path in ("/", "/index.html"):
            return "text/html; charset=utf-8", self.server.page
        raise HTTPError(HTTPStatus.NOT_FOUND, f"no page {urlsplit(self.path).path}")

    def _post(self):
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/api/caption":
            name = query.get("name") or "upload"
            beam = _int_in(query.get("beam", "3"), 1, MAX_BEAM, "beam size")
            data = self._body(self.server.max_upload_bytes, f"{name}: the file")
            try:
                image_id, image = self.server.uploads.add(data, name)
            except UserError as e:
                raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, str(e)) from None
            item = self.server.models.caption(image, name, beam)
            return _json({"item": {**item, "image_id": image_id}})
        if url.path == "/api/vqa":
            try:
                request = json.loads(self._body(MAX_QUESTION_BYTES, "the question"))
                image_id, question = str(request["image_id"]), str(request["question"])
            except (ValueError, KeyError, TypeError):
                raise HTTPError(HTTPStatus.BAD_REQUEST, 'expected JSON {"image_id": ..., "question": ...}') from None
            image, name = self.server.uploads.get(image_id)
            return _json({"item": self.server.models.answer(image, name, question)})
        raise HTTPError(HTTPStatus.NOT_FOUND, f"no endpoint {url.path}")

    def _body(self, limit: int, what: str) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise HTTPError(HTTPStatus.LENGTH_REQUIRED, "the request has no Content-Length")
        length = int(length)
        if length > limit:
            self._discard(length)
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"{what} is {_size(length)}, over the limit of {_size(limit)}")
        return self.rfile.read(length)

    def _discard(self, length: int) -> None:
        """Read a refused body away, so the client reads our answer instead of a reset
        connection; past a bound, stop reading and close instead."""
        self.close_connection = True
        left = min(length, 4 * self.server.max_upload_bytes)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)

    def _answer(self, route) -> None:
        try:
            self._check_host()
            content_type, body = route()
            status = HTTPStatus.OK
        except HTTPError as e:
            status, (content_type, body) = e.status, _json({"error": str(e)})
        except UserError as e:  # a bad question, a checkpoint that is not one
            status, (content_type, body) = HTTPStatus.BAD_REQUEST, _json({"error": str(e)})
        except Exception as e:  # a bug: say so, keep serving
            traceback.print_exc()
            status, (content_type, body) = HTTPStatus.INTERNAL_SERVER_ERROR, _json({"error": f"server error: {e}"})
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _check_host(self) -> None:
        if not self.server.local_only:
            return
        host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        if host != "localhost" and not _is_loopback(host):
            raise HTTPError(HTTPStatus.FORBIDDEN, f"this server answers only local addresses, not {host!r}")

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's name)
        sys.stderr.write(f"{PROG}: {self.address_string()} {format % args}\n")


def _json(obj) -> tuple[str, bytes]:
    return "application/json", json.dumps(obj).encode("utf-8")


def _int_in(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"{what} must be a whole number from {low} to {high}, got {text!r}")
    return value


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="The attention explorer as a local web app: drop images, see "
                                "where the captioner looked for each word, ask questions about them.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--checkpoint", help="a caption checkpoint (.safetensors); default: the shipped one")
    p.add_argument("--vqa-checkpoint", help="a VQA checkpoint; default: the shipped one; 'none' for no questions")
    p.add_argument("--max-upload-mb", type=positive_int, default=MAX_UPLOAD_MB,
                   help=f"largest image accepted, in MB (default {MAX_UPLOAD_MB})")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--instances", help="COCO instances of annotated images (e.g. instances_test.json of "
                   "scripts/prepare_scenes.py): an uploaded image of that file name gets its object boxes, "
                   "shown over the picture with a toggle")
    add_precision_arg(p)
    return p


def make_server(args: argparse.Namespace, folder: Path) -> ExplorerServer:
    """The server for parsed ``args``, uploads under ``folder``; checkpoints are found now and
    loaded on the first request that needs them."""
    from captioning.api import DEFAULT_CAPTION_CHECKPOINT
    from captioning.core.checkpoint import resolve_checkpoint

    caption_path, _ = resolve_checkpoint(args.checkpoint, DEFAULT_CAPTION_CHECKPOINT)
    vqa_path = None
    if args.vqa_checkpoint is None or args.vqa_checkpoint.lower() != "none":
        from vqa.api import DEFAULT_VQA_CHECKPOINT  # here, not at the top: captioning never imports vqa up front

        vqa_path, _ = resolve_checkpoint(args.vqa_checkpoint, DEFAULT_VQA_CHECKPOINT)
    for path in filter(None, (caption_path, vqa_path)):
        if not path.is_file():
            raise UserError(f"{path}: no such checkpoint")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: a port is a number from 0 to 65535 (0 picks a free one)")
    cards = [model_card(caption_path, "caption")] + ([model_card(vqa_path, "vqa")] if vqa_path else [])
    instances = None
    if getattr(args, "instances", None):
        from captioning.core.grounding import load_instances

        instances = load_instances(args.instances)
    models = Models(caption_path, vqa_path, device_from_arg(args.device), args.precision, instances)
    try:
        return ExplorerServer((args.host, args.port), models, folder, args.max_upload_mb * 2**20, cards)
    except (OSError, OverflowError) as e:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({getattr(e, 'strerror', None) or e})") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    return run(PROG, lambda: _serve(args))


def _serve(args) -> int:
    # SIGTERM (kill, a service manager) ends like Ctrl-C: through the finally blocks, so the
    # temporary folder of uploads is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with tempfile.TemporaryDirectory(prefix="explore-") as folder:
        server = make_server(args, Path(folder))
        print(f"{PROG}: serving on {server.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            server.serve_forever()
        finally:
            server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
