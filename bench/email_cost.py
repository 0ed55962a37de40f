"""CPU per e-mail: build_email, and EmailNotifier.send against a loopback aiosmtpd server.

    python -m bench.email_cost                 # 2,000 builds, 500 sends, 3 rounds: ~10-25 s
    python -m bench.email_cost --builds 500 --sends 100 --rounds 1

CPU is `time.process_time()` of this process (every thread: aiosmtplib's executor hop counts) over
N builds or N sequential sends, on a kept session (the notifier's default) and with a new SMTP
session per mail (as before sessions were kept); the median round is reported. Every message has
a title of its own (an alert storm's incidents do), one long enough to be folded; "unicode"
titles carry an en dash (RFC 2047 encoding). The SMTP server runs in a process of its own, so
its CPU is not counted; it checks that every send arrived.
"""

import argparse
import asyncio
import dataclasses
import email.policy
import multiprocessing
import multiprocessing.connection
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from engine.events import Action  # noqa: E402
from engine.messages import AlertSummary, Message  # noqa: E402
from engine.notifiers import email as email_notifier  # noqa: E402
from engine.notifiers import smtp_sessions  # noqa: E402

HOST = "127.0.0.1"
SENDER = "Escalation Engine <alerts@example.com>"
IDS = "alerts.example.com"
WARM_UP = 20
TITLE_TAIL = "5xx ratio above 5% on web-1, web-2 and web-3"


def _alert(n: int) -> AlertSummary:
    return AlertSummary(
        fingerprint=f"ab{n:02d}",
        status="firing",
        labels={"alertname": "HighErrorRate", "service": "checkout", "instance": f"web-{n}"},
        annotations={
            "summary": "<script>alert('x')</script> 5xx above 5%",
            "runbook_url": "https://runbooks.example/HighErrorRate",
        },
        starts_at="2026-11-23T10:00:00Z",
        generator_url=f"http://prom.example/graph?g0.expr=a&g0.tab=1&i={n}",
    )


def message(alerts: int = 3) -> Message:
    """Shaped like the unit tests' MESSAGE: text and html bodies, signed links, labels, alerts."""
    url = "https://esc.example/api/v1/incidents/3-0a1b2c3d4e5f"
    firing = "HighErrorRate web-{} <script>alert('x')</script> 5xx above 5%"
    lines = [
        "Incident 3-0a1b2c3d4e5f: HighErrorRate checkout",
        "Severity: P1",
        *(f"  [firing] {firing.format(n)}" for n in range(alerts)),
        f"Details: {url}",
        f"Acknowledge: {url}/ack?sig=0123456789abcdef0123456789abcdef",
    ]
    body = "\n".join(lines)
    return Message(
        action=Action.TRIGGER,
        incident_id="3-0a1b2c3d4e5f",
        title=f"[P1] HighErrorRate checkout - {TITLE_TAIL}",
        body=body,
        html=body.replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#x27;"),
        severity="P1",
        severity_rank=1,
        status="triggered",
        level=0,
        target="user:sre-oncall",
        address="oncall@example.com",
        labels={"alertname": "HighErrorRate", "service": "checkout"},
        alerts=tuple(_alert(n) for n in range(alerts)),
        triggered_at="2026-11-23T10:00:05Z",
        incident_url=url,
        links={
            "acknowledge": f"{url}/ack?sig=0123456789abcdef0123456789abcdef",
            "resolve": f"{url}/resolve?sig=fedcba9876543210fedcba9876543210",
        },
    )


def variants(base: Message, n: int, unicode: bool = False) -> list[Message]:
    dash = "\u2013" if unicode else "-"
    return [
        dataclasses.replace(base, title=f"[P1] HighErrorRate checkout #{i} {dash} {TITLE_TAIL}")
        for i in range(n)
    ]


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """The SMTP server's process: sends its port, counts messages until told to stop."""
    from aiosmtpd.controller import Controller

    class Counter:
        received = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            Counter.received += 1
            return "250 OK"

    class PortZero(Controller):
        def _trigger_server(self) -> None:
            assert isinstance(self.server, asyncio.Server)
            self.port = self.server.sockets[0].getsockname()[1]
            super()._trigger_server()  # type: ignore[no-untyped-call]

    controller = PortZero(Counter(), hostname=HOST, port=0, ready_timeout=10)
    controller.start()
    try:
        conn.send(controller.port)
        conn.recv()  # "stop"
        conn.send(Counter.received)
    finally:
        controller.stop()


def wire_bytes(mail: Any) -> bytes:
    """The bytes as sent. Before this change aiosmtplib's send_message() flattened build_email's
    EmailMessage (a copy, every header re-folded by email.policy.SMTP); now send() calls as_bytes()."""
    if isinstance(mail.policy, email.policy.EmailPolicy):
        from aiosmtplib.email import flatten_message

        return flatten_message(mail, cte_type="8bit")
    return bytes(mail.as_bytes())


def measure_builds(messages: list[Message], *, flatten: bool) -> float:
    build = email_notifier.build_email
    start = time.process_time()
    for msg in messages:
        mail = build(msg, SENDER, hostname_for_ids=IDS)
        if flatten:
            wire_bytes(mail)
    return (time.process_time() - start) * 1000 / len(messages)


async def measure_sends(messages: list[Message], port: int, keep: bool) -> tuple[float, float]:
    """`keep`: sessions kept for the next mail (the default); else a new session per mail (its
    QUIT and close counted too, as they were inside send() before sessions were kept)."""

    def notifier() -> email_notifier.EmailNotifier:
        return email_notifier.EmailNotifier(
            HOST,
            port,
            SENDER,
            starttls=False,
            tls=False,
            username=None,
            password=None,
            hostname_for_ids=IDS,
            idle_sessions=smtp_sessions.MAX_IDLE if keep else 0,
        )

    warm = notifier()
    for msg in messages[:WARM_UP]:  # imports, first connections, the EHLO name
        await warm.send(msg)
    await warm.aclose()
    measured = notifier()
    cpu, wall = time.process_time(), time.perf_counter()
    for msg in messages[WARM_UP:]:
        await measured.send(msg)
    await measured.aclose()
    n = len(messages) - WARM_UP
    return (time.process_time() - cpu) * 1000 / n, (time.perf_counter() - wall) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--builds", type=int, default=2000)
    parser.add_argument("--sends", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--alerts", type=int, default=3)
    args = parser.parse_args()
    base = message(args.alerts)
    size = len(wire_bytes(email_notifier.build_email(base, SENDER, hostname_for_ids=IDS)))
    print(f"message: {args.alerts} alerts, {size} bytes; {args.rounds} rounds, median shown")

    mp = multiprocessing.get_context("spawn")
    ours, theirs = mp.Pipe()
    server = mp.Process(target=_serve, args=(theirs,), daemon=True)
    server.start()
    rounds: dict[str, list[float]] = {}
    try:
        if not ours.poll(30):
            raise SystemExit("the SMTP server did not start")
        port = ours.recv()
        for r in range(args.rounds):
            ascii_titles = variants(base, args.builds)  # new titles each round: no cache reused
            unicode_titles = variants(base, args.builds, unicode=True)
            sends = variants(dataclasses.replace(base, incident_id=f"3-{r}"), args.sends + WARM_UP)
            got = {
                "build": measure_builds(ascii_titles, flatten=False),
                "wire": measure_builds(variants(base, args.builds), flatten=True),
                "wire_unicode": measure_builds(unicode_titles, flatten=True),
            }
            got["send"], got["send_wall"] = asyncio.run(measure_sends(sends, port, keep=True))
            fresh = variants(dataclasses.replace(base, incident_id=f"4-{r}"), args.sends + WARM_UP)
            got["send_new"], got["send_new_wall"] = asyncio.run(measure_sends(fresh, port, keep=False))
            for key, value in got.items():
                rounds.setdefault(key, []).append(value)
        ours.send("stop")
        received = ours.recv() if ours.poll(10) else -1
    finally:
        server.join(timeout=10)
        if server.is_alive():
            server.terminate()
            server.join(timeout=5)
    med = {key: statistics.median(values) for key, values in rounds.items()}
    print(f"build_email:                      {med['build']:.3f} CPU ms  ({args.builds} per round)")
    print(f"build_email + wire bytes:         {med['wire']:.3f} CPU ms")
    print(f"  the same, non-ASCII title:      {med['wire_unicode']:.3f} CPU ms")
    print(f"EmailNotifier.send, kept session: {med['send']:.3f} CPU ms  ({args.sends} per round)")
    print(f"  wall time per send:             {med['send_wall']:.3f} ms")
    print(f"  a new session per mail:         {med['send_new']:.3f} CPU ms")
    print(f"  wall time per send:             {med['send_new_wall']:.3f} ms")
    expected = 2 * args.rounds * (args.sends + WARM_UP)
    print(f"server received {received} of {expected} e-mails")
    if received != expected:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
