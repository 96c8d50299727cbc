"""`remsguard simulate` end to end: file output replayed by `remsguard replay`, and --post."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import orjson
import pytest
from typer.testing import CliRunner

from remsguard.entrypoints.cli import app

ARGS = [
    "simulate",
    "--seed",
    "11",
    "--clinics",
    "2",
    "--chairs",
    "3",
    "--sessions-per-chair",
    "3",
    *("--early-discharge-rate", "0.1", "--missed-check-rate", "0.1"),
    *("--missing-pre-dose-bp-rate", "0.1", "--bp-crisis-rate", "0.1"),
    *("--desaturation-rate", "0.1", "--dropout-rate", "0.1"),
    *("--duplicate-rate", "0.05", "--reorder-rate", "0.2", "--malformed-rate", "0.02"),
]


def invoke(*args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout_bytes, result.stderr


def test_simulate_then_replay_raises_exactly_what_the_manifest_says(tmp_path: Path) -> None:
    events, manifest_file = tmp_path / "day.jsonl", tmp_path / "manifest.json"
    code, _, err = invoke(*ARGS, "--out", str(events), "--manifest", str(manifest_file))
    assert code == 0, err
    manifest = orjson.loads(manifest_file.read_bytes())

    code, out, err = invoke("replay", str(events), "--until", manifest["until"])
    assert code == 0
    alerts = [orjson.loads(line) for line in out.splitlines()]
    raised = Counter((a["session_id"], a["rule"], a["triggered_at"]) for a in alerts)
    wanted = Counter(
        (s["session_id"], a["rule"], a["triggered_at"])
        for s in manifest["sessions"]
        for v in s["violations"]
        for a in v["expected_alerts"]
    )
    assert raised == wanted and wanted
    compliant = {s["session_id"] for s in manifest["sessions"] if s["compliant"]}
    assert compliant and not compliant & {a["session_id"] for a in alerts}
    rejected = [line for line in err.splitlines() if ": rejected: " in line]
    assert rejected and len(rejected) == manifest["transport"]["malformed"]
    for line, expected in zip(rejected, manifest["rejections"], strict=True):
        assert line.startswith(f"line {expected['line']}: rejected: {expected['reason']}:")
    assert set(manifest["counts"]["sessions_by_protocol"]) == {"spravato-rems", "ketamine-iv"}


def test_same_seed_gives_identical_bytes_on_stdout(tmp_path: Path) -> None:
    first = invoke(*ARGS, "--out", "-", "--manifest", str(tmp_path / "a.json"))
    second = invoke(*ARGS, "--manifest", str(tmp_path / "b.json"))  # stdout is the default
    assert first[0] == second[0] == 0
    assert first[1] == second[1] and first[1].count(b"\n") > 500
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_manifest_goes_to_stderr_by_default(tmp_path: Path) -> None:
    code, _, err = invoke(*ARGS, "--out", str(tmp_path / "x.jsonl"))
    assert code == 0
    manifest = orjson.loads(err)
    assert manifest["seed"] == 11 and len(manifest["sessions"]) == 18


class Ingest(BaseHTTPRequestHandler):
    """A stand-in for the embedded ingest: records each POST, answers per event."""

    requests: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []
    answer: ClassVar[int] = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append((self.path, dict(self.headers), body))
        lines = body.splitlines()
        payload = orjson.dumps({"results": [{"status": "accepted"} for _ in lines]})
        self.send_response(self.answer)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def ingest() -> Iterator[str]:
    Ingest.requests = []
    Ingest.answer = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/events"
    finally:
        server.shutdown()
        server.server_close()


def test_post_sends_ndjson_batches_with_the_device_token(ingest: str, tmp_path: Path) -> None:
    copy = tmp_path / "copy.jsonl"
    code, _, err = invoke(
        *ARGS,
        *("--post", ingest, "--token", "dev-secret", "--batch-size", "100"),
        *("--out", str(copy), "--manifest", str(tmp_path / "m.json")),
    )
    assert code == 0, err
    assert Ingest.requests
    for path, headers, body in Ingest.requests:
        assert path == "/v1/events"
        assert headers["Authorization"] == "Bearer dev-secret"
        assert headers["Content-Type"] == "application/x-ndjson"
        assert body.endswith(b"\n") and body.count(b"\n") <= 100
    assert b"".join(body for _, _, body in Ingest.requests) == copy.read_bytes()
    summary = orjson.loads(err.split("remsguard simulate: ", 1)[1])
    assert summary["posted_lines"] == copy.read_bytes().count(b"\n")
    assert summary["outcomes"] == {"accepted": summary["posted_lines"]}


def test_post_refused_is_a_clear_error(ingest: str) -> None:
    Ingest.answer = 401
    code, _, err = invoke(*ARGS, "--post", ingest, "--token", "wrong")
    assert code == 1
    assert "refused a batch" in err and "401" in err
    assert len(Ingest.requests) == 1


def test_post_needs_a_token(ingest: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REMSGUARD_DEVICE_TOKEN", raising=False)
    code, _, _ = invoke(*ARGS, "--post", ingest)
    assert code == 2
    assert Ingest.requests == []


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    code, _, err = invoke("simulate", "--early-discharge-rate", "0.9", "--bp-crisis-rate", "0.9")
    assert code == 2 and "at most 1" in err
    code, _, _ = invoke("simulate", "--start", "2026-11-23T08:00:00")
    assert code == 2
