"""HL7 v2 over MLLP into a real `remsguard up --hl7-port`, sent with python-hl7's own client
(`hl7.client.MLLPClient`) or raw sockets where the framing itself is under test."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import hl7
import orjson
import pytest
from hl7.client import MLLPClient

from .embedded_support import Up, free_port, ndjson, remsguard, start_up

LIMIT = 64 * 1024
# A session under way, dosed 13 minutes before the module's tests begin, readings every 4
# minutes: no deadline is due while the messages arrive one after the other, so live and
# replay decide the same (late arrival is another matter, the same for HL7 as for JSON).
_DOSE = {"at": dt.datetime.now(dt.UTC)}


@pytest.fixture(scope="module", autouse=True)
def _dose_time() -> None:
    _DOSE["at"] = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=13)


def ts(minutes: float) -> str:
    return (_DOSE["at"] + dt.timedelta(minutes=minutes)).strftime("%Y%m%d%H%M%S+0000")


def iso(minutes: float) -> str:
    return (_DOSE["at"] + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def oru(control: str, minutes: float, obx: list[str], session: str = "S-HL7") -> str:
    return "\r".join(
        [
            rf"MSH|^~\&|VSP^0800^EUI-64|CLINIC-7|||{ts(minutes)}||ORU^R01^ORU_R01|{control}|P|2.6",
            r"PID|||PAT-7^^^PID^MR||DOE^JANE",
            rf"PV1||O|||||||||||||||||{session}",
            rf"OBR|1|||182777000^monitoring of patient^SCT|||{ts(minutes)}",
            r"OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X",
            *obx,
        ]
    )


def bp(systolic: int, diastolic: int) -> list[str]:
    return [
        f"OBX|2|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.1.1.1|{systolic}|266016^MDC_DIM_MMHG^MDC"
        "|||||R",
        f"OBX|3|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.1.1.2|{diastolic}|266016^MDC_DIM_MMHG^MDC"
        "|||||R",
    ]


def spo2(value: int) -> list[str]:
    return [
        f"OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.6.1.1|{value}|262688^MDC_DIM_PERCENT^MDC|||||F"
    ]


def ras(control: str, minutes: float, session: str = "S-HL7") -> str:
    return "\r".join(
        [
            rf"MSH|^~\&|PYXIS|CLINIC-7|||{ts(minutes)}||RAS^O17^RAS_O17|{control}|P|2.6",
            r"PID|||PAT-7",
            rf"PV1||O|||||||||||||||||{session}",
            r"ORC|RE",
            rf"RXA|0|1|{ts(minutes)}||50458-028-02^SPRAVATO 56 MG^NDC|56|mg||||||||LOT-9|||||CP",
            r"RXR|NS^Nasal^HL70162",
        ]
    )


def session() -> list[str]:
    """A pre-dose BP, the dose, a low SpO2, a crisis BP, a normal SpO2."""
    return [
        oru("C-1", -10, bp(122, 78)),
        ras("C-2", 0),
        oru("C-3", 4, spo2(88)),
        oru("C-4", 8, bp(188, 124)),
        oru("C-5", 12, spo2(97)),
    ]


# The same session as JSON events, written by hand: what `remsguard replay` is given.
JSON_EVENTS = [
    ("vitals.recorded", -10, {"systolic": 122, "diastolic": 78}),
    ("dose.administered", 0, {"drug": "esketamine", "route": "intranasal", "dose_mg": 56,
                              "lot_number": "LOT-9"}),
    ("vitals.recorded", 4, {"spo2": 88}),
    ("vitals.recorded", 8, {"systolic": 188, "diastolic": 124}),
    ("vitals.recorded", 12, {"spo2": 97}),
]  # fmt: skip


def ack_code(answer: bytes | str) -> str:
    text = answer.decode() if isinstance(answer, bytes) else answer
    message = hl7.parse(text.strip("\x0b\x1c\r"))
    return str(message.segment("MSA")[1])


def frame(text: str) -> bytes:
    return b"\x0b" + text.encode() + b"\x1c\r"


def read_frame(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\x1c\r"):
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    process = _start(tmp_path / "data")
    try:
        yield process
    finally:
        process.stop()


def _start(data: Path, env: dict[str, str] | None = None, hl7_port: int | None = None) -> Up:
    port = hl7_port or free_port()
    settings = {
        "REMSGUARD_HL7_READ_TIMEOUT_SECONDS": "2",
        "REMSGUARD_HL7_MAX_MESSAGE_BYTES": str(LIMIT),
        "REMSGUARD_HL7_MAX_CONNECTIONS": "300",
        **(env or {}),
    }
    process = start_up(data, args=["--hl7-port", str(port)], env=settings)
    process.hl7_port = port  # type: ignore[attr-defined]
    return process


def _client(up: Up) -> MLLPClient:
    return MLLPClient("127.0.0.1", up.hl7_port)  # type: ignore[attr-defined]


def _core(alerts: list[dict[str, object]]) -> set[tuple[object, ...]]:
    return {(a["rule"], a["triggered_at"], a["severity"], a["message"]) for a in alerts}


def test_a_sessions_vitals_and_dose_over_mllp_raise_what_replay_of_the_json_raises(
    up: Up, tmp_path: Path
) -> None:
    with _client(up) as client:
        for message in session():
            assert ack_code(client.send_message(message)) == "AA"
    served = up.alerts(session="S-HL7")
    lines = [
        orjson.dumps(
            {"type": kind, "event_id": f"j{n}", "session_id": "S-HL7", "clinic_id": "CLINIC-7",
             "occurred_at": iso(minutes), "data": data}
        )
        for n, (kind, minutes, data) in enumerate(JSON_EVENTS)
    ]  # fmt: skip
    scenario = tmp_path / "session.jsonl"
    scenario.write_bytes(ndjson(lines))
    until = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    replayed = remsguard("replay", str(scenario), "--until", until)
    assert replayed.returncode == 0, replayed.stderr
    expected = [orjson.loads(line) for line in replayed.stdout.splitlines() if line.strip()]
    assert {"SPO2_LOW", "BP_CRISIS", "BP_RISE"} <= {a["rule"] for a in expected}
    assert _core(served) == _core(expected)


def test_a_resent_message_is_acknowledged_again_and_changes_nothing_even_after_kill_9(
    up: Up,
) -> None:
    with _client(up) as client:
        for message in session()[:2]:
            assert ack_code(client.send_message(message)) == "AA"
    # The listener dies between receiving a message and acknowledging it (or just after).
    with socket.create_connection(("127.0.0.1", up.hl7_port)) as sock:  # type: ignore[attr-defined]
        sock.sendall(frame(session()[2]))
        up.kill()
    again = _start(up.data_dir, hl7_port=up.hl7_port)  # type: ignore[attr-defined]
    try:
        with _client(again) as client:
            for message in session():  # the sender re-sends what it has no ACK for, and more
                assert ack_code(client.send_message(message)) == "AA"
        records = again.client.get(
            f"{again.base}/v1/audit/records",
            params={"session": "S-HL7", "kind": "event.accepted"},
            headers=again.auth("admin"),
        ).json()["records"]
        assert len(records) == len(JSON_EVENTS)  # one per event: nothing lost, nothing twice
        rules = [a["rule"] for a in again.alerts(session="S-HL7")]
        assert len(rules) == len(set(rules)) and "BP_CRISIS" in rules
    finally:
        assert again.stop() == 0, again.log


def test_framing_split_across_reads_and_several_messages_in_one_read(up: Up) -> None:
    one, two = frame(session()[0]), frame(session()[1])
    with socket.create_connection(("127.0.0.1", up.hl7_port)) as sock:  # type: ignore[attr-defined]
        for start in range(0, len(one), 40):  # a message in many small reads
            sock.sendall(one[start : start + 40])
            time.sleep(0.01)
        assert ack_code(read_frame(sock)) == "AA"
        sock.sendall(one + two)  # two messages in one read: two ACKs, in order
        answers = b""
        while answers.count(b"\x1c\r") < 2:
            answers += read_frame(sock)
        assert [ack_code(a) for a in answers.split(b"\x1c\r")[:2]] == ["AA", "AA"]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_bad_input_gets_a_clear_nak_or_a_close_and_the_listener_lives_on(up: Up) -> None:
    port = up.hl7_port  # type: ignore[attr-defined]
    with _client(up) as client:
        no_msh = client.send_message("PID|||PAT-7\rOBX|1|NM|150456^X^MDC||97|%|||||F")
        assert ack_code(no_msh) == "AR"
        wrong = client.send_message(session()[0].replace("ORU^R01^ORU_R01", "ADT^A01"))
        assert ack_code(wrong) == "AR" and b"ERR||MSH^1^9|200" in wrong
        future = session()[0].replace(ts(-10), ts(24 * 60)).replace("C-1", "C-F")
        answer = client.send_message(future)
        assert ack_code(answer) == "AE" and b"occurred_in_future" in answer
    with socket.create_connection(("127.0.0.1", port)) as sock:  # garbage: closed, no ACK
        sock.sendall(b"\x00\xffGET / HTTP/1.1\r\n\r\n" * 50)
        assert read_frame(sock) == b""
    with socket.create_connection(("127.0.0.1", port)) as sock:  # over the size limit
        sock.sendall(frame(session()[0] + "\rNTE|1||" + "x" * (LIMIT + 10)))
        answer = read_frame(sock)
        assert ack_code(answer) == "AR" and b"larger than" in answer
        assert read_frame(sock) == b""  # and the connection is closed
    with socket.create_connection(("127.0.0.1", port)) as sock:  # slow-loris: closed
        sock.sendall(b"\x0bMSH|^~\\&|")
        started = time.monotonic()
        assert read_frame(sock, timeout=10) == b""
        assert time.monotonic() - started < 8
    before = _rss_mb(up.process.pid)
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(1000)]
    try:
        time.sleep(1.0)
        assert up.client.get(f"{up.base}/healthz").status_code == 200
        assert _rss_mb(up.process.pid) - before < 150
    finally:
        for sock in sockets:
            sock.close()
    time.sleep(0.5)
    with _client(up) as client:  # still taking messages
        assert ack_code(client.send_message(session()[0])) == "AA"
    metrics = up.client.get(f"{up.base}/metrics").text
    assert 'remsguard_hl7_messages_total{ack="AR",reason="unsupported_message_type"} 1.0' in metrics
    assert 'remsguard_hl7_messages_total{ack="AR",reason="too_large"} 1.0' in metrics


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address(
                "127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "hl7.crt", directory / "hl7.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def test_mllp_over_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    up = _start(
        tmp_path / "data",
        env={"REMSGUARD_HL7_TLS_CERT": str(cert), "REMSGUARD_HL7_TLS_KEY": str(key)},
    )
    try:
        context = ssl.create_default_context(cafile=str(cert))
        raw = socket.create_connection(("127.0.0.1", up.hl7_port))  # type: ignore[attr-defined]
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(frame(session()[0]))
            assert ack_code(read_frame(sock)) == "AA"
        with socket.create_connection(("127.0.0.1", up.hl7_port)) as plain:  # type: ignore[attr-defined]
            plain.sendall(frame(session()[0]))  # no TLS: no ACK
            try:
                answer = read_frame(plain, timeout=3)
            except OSError:
                answer = b""
            assert b"MSA" not in answer
    finally:
        assert up.stop() == 0, up.log
    assert "MLLP over TLS" in up.log_path.read_text()


def test_an_hl7_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = remsguard(
            "up", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
            "--hl7-port", str(port), timeout=60,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"cannot listen for HL7 on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
