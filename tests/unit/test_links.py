"""Signed one-click links: sign/verify, the pages they open, and their buttons in an email (all escaped)."""

import base64
import hashlib
import re
import string
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import escape

from engine.api.linkpages import CSP, STYLE, STYLE_HASH, confirm_page, message_page
from engine.api.links import MAX_NAME_CHARS, clean_name
from engine.links import ACTIONS, Link, LinkError, LinkExpired, _mac, links_for, sign, verify
from engine.notifiers.email_body import html_body
from tests.unit.test_notifier_email import MESSAGE

SECRET = b"k" * 32
NOW = 1_800_000_000_000
EXPIRES = NOW + 3_600_000
TOKEN_CHARS = string.ascii_letters + string.digits + "-_."


def test_a_signed_token_verifies_to_its_incident_action_and_expiry() -> None:
    token = sign(SECRET, "3-0a1b2c3d4e5f", "ack", EXPIRES)
    link = verify(SECRET, token, NOW)
    assert link == Link("3-0a1b2c3d4e5f", "ack", EXPIRES, token.rsplit(".", 1)[1])
    assert sign(SECRET, "3-0a1b2c3d4e5f", "ack", EXPIRES) == token  # a retried delivery: the same link
    assert verify(SECRET, sign(SECRET, "3-0a1b2c3d4e5f", "resolve", EXPIRES), NOW).action == "resolve"


def test_ack_and_resolve_tokens_differ_in_payload_and_digest() -> None:
    ack, resolve = (sign(SECRET, "i-1", word, EXPIRES) for word in ("ack", "resolve"))
    assert ack.rsplit(".", 1)[1] != resolve.rsplit(".", 1)[1]
    forged = resolve.rsplit(".", 1)[0] + "." + ack.rsplit(".", 1)[1]  # the ack digest on a resolve payload
    with pytest.raises(LinkError, match="not valid"):
        verify(SECRET, forged, NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t.replace("i-1.", "i-2.", 1),  # another incident
        lambda t: t.replace(".ack.", ".resolve.", 1),  # another action
        lambda t: t.replace(f".{EXPIRES // 1000}.", f".{EXPIRES // 1000 + 86_400}.", 1),  # a later expiry
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # the digest
        lambda t: t[:-2],  # a digest cut short
        lambda t: t + "A",  # one too long
    ],
)
def test_tampered_payload_or_digest_is_refused(tamper: object) -> None:
    token = sign(SECRET, "i-1", "ack", EXPIRES)
    assert callable(tamper)
    bad = tamper(token)
    assert bad != token
    with pytest.raises(LinkError, match="not valid") as err:
        verify(SECRET, bad, NOW)
    assert not isinstance(err.value, LinkExpired)


def test_another_secret_is_refused() -> None:
    with pytest.raises(LinkError, match="signed with another secret"):
        verify(b"other", sign(SECRET, "i-1", "ack", EXPIRES), NOW)


def test_expiry_boundary() -> None:
    token = sign(SECRET, "i-1", "resolve", EXPIRES)
    assert verify(SECRET, token, EXPIRES - 1).expires_ms == EXPIRES
    with pytest.raises(LinkExpired, match="expired"):
        verify(SECRET, token, EXPIRES)
    with pytest.raises(LinkExpired):
        verify(SECRET, token, EXPIRES + 86_400_000)


def test_expiry_is_kept_to_the_second() -> None:
    link = verify(SECRET, sign(SECRET, "i-1", "ack", EXPIRES + 999), NOW)
    assert link.expires_ms == EXPIRES  # never later than asked


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "...",
        "i-1.ack.1800003600",
        "i-1.ack.1800003600.x.y",
        "i-1.ack.1800003600.é" + "A" * 31,
        "a" * 201,
        "i-1.ack.1800003600." + "\x00" * 32,
        "../../etc/passwd",
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(LinkError):
        verify(SECRET, token, NOW)


def test_a_validly_signed_but_strange_payload_is_still_refused() -> None:
    # only a bug (or a leaked secret) could sign these: verify checks the fields after the MAC too
    for payload in ("i-1.snooze.1800003600", "i-1.ack.soon"):
        with pytest.raises(LinkError, match="malformed"):
            verify(SECRET, f"{payload}.{_mac(SECRET, payload)}", NOW)


def test_sign_refuses_what_it_cannot_put_in_a_link() -> None:
    with pytest.raises(ValueError, match="action"):
        sign(SECRET, "i-1", "unack", EXPIRES)
    for bad in ("", "a.b", "a/b", "a b", "ä"):
        with pytest.raises(ValueError, match="incident id"):
            sign(SECRET, bad, "ack", EXPIRES)
    with pytest.raises(ValueError, match="1970"):
        sign(SECRET, "i-1", "ack", -1)


def test_links_for_builds_both_urls_under_the_public_url() -> None:
    urls = links_for(SECRET, "https://esc.example/base/", "i-1", EXPIRES)
    assert set(urls) == set(ACTIONS.values()) == {"acknowledge", "resolve"}
    for key, word in (("acknowledge", "ack"), ("resolve", "resolve")):
        prefix = "https://esc.example/base/ack/"
        assert urls[key].startswith(prefix)
        assert verify(SECRET, urls[key].removeprefix(prefix), NOW).action == word
    assert links_for(SECRET, "", "i-1", EXPIRES) == {}
    assert links_for(SECRET, "https://esc.example", "odd id", EXPIRES) == {}  # no link, no crash


@given(
    incident_id=st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True),
    action=st.sampled_from(sorted(ACTIONS)),
    expires_s=st.integers(min_value=NOW // 1000 + 1, max_value=10**11),
    data=st.data(),
)
def test_any_single_character_change_is_refused(
    incident_id: str, action: str, expires_s: int, data: st.DataObject
) -> None:
    token = sign(SECRET, incident_id, action, expires_s * 1000)
    assert verify(SECRET, token, NOW).incident_id == incident_id
    at = data.draw(st.integers(min_value=0, max_value=len(token) - 1), label="position")
    new = data.draw(
        st.one_of(st.sampled_from(TOKEN_CHARS), st.characters(codec="utf-8")).filter(
            lambda c: c != token[at]
        ),
        label="character",
    )
    how = data.draw(st.sampled_from(["replace", "insert", "delete"]), label="how")
    changed = {
        "replace": token[:at] + new + token[at + 1 :],
        "insert": token[:at] + new + token[at:],
        "delete": token[:at] + token[at + 1 :],
    }[how]
    with pytest.raises(LinkError):
        verify(SECRET, changed, NOW)


# The pages ---------------------------------------------------------------------------------------

HOSTILE = {
    "id": "i-1",
    "title": "<script>alert(1)</script> & \"quoted\" 'x'",
    "severity": "<b>P0</b>",
    "status": "triggered",
    "acknowledged_by": "",
    "resolved_by": "",
    "started": "2027-01-15T08:00:00.000Z",
}


def test_confirmation_page_escapes_everything_and_posts_to_itself() -> None:
    html = confirm_page(
        "Acknowledge incident <i-1>?",
        incident=HOSTILE,
        action="ack",
        button="Acknowledge incident",
        expires="2027-01-16T09:00:00.000Z",
        max_name=MAX_NAME_CHARS,
    )
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quoted&#34;" in html
    assert "&lt;b&gt;P0&lt;/b&gt;" in html and "Acknowledge incident &lt;i-1&gt;?" in html
    form = re.search(r"<form[^>]*>", html)
    assert form is not None and form.group(0) == '<form method="post">'  # no action: its own URL
    assert '<button type="submit" class="ack">Acknowledge incident</button>' in html
    assert f'maxlength="{MAX_NAME_CHARS}"' in html
    assert "<script" not in html.lower() and "src=" not in html and "http" not in html  # self-contained


def test_the_style_block_is_exactly_what_the_policy_allows() -> None:
    html = message_page("Done", ["x"], tone="ok")
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    assert style is not None and style.group(1) == STYLE
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"sha256-{digest}" == STYLE_HASH and f"style-src '{STYLE_HASH}'" in CSP
    assert "frame-ancestors 'none'" in CSP and "default-src 'none'" in CSP


def test_message_page_escapes_lines_and_has_no_form() -> None:
    html = message_page("Acknowledged", ["Incident i-1 is acknowledged by <img src=x> (via link)."])
    assert "&lt;img src=x&gt;" in html and "<form" not in html and "<dl>" not in html


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Alice   Smith ", "Alice Smith"),
        ("bob\r\nBcc: x", "bob Bcc: x"),
        ("eve\x00\x1b[31m\u202e", "eve [31m"),
        ("", ""),
        ("x" * 500, "x" * MAX_NAME_CHARS),
    ],
)
def test_the_optional_name_is_one_short_printable_line(raw: str, clean: str) -> None:
    assert clean_name(raw) == clean


# The links in an email's HTML part ---------------------------------------------------------------

ACK_URL = "https://esc.example/ack/i-1.ack.1800003600.AAAA"
RESOLVE_URL = "https://esc.example/ack/i-1.resolve.1800003600.BBBB"


def _email(status: str, links: dict[str, str], body: str, markup: str = "") -> str:
    message = replace(MESSAGE, status=status, links=links, body=body, html=markup)
    return html_body(message)


def test_email_html_has_buttons_and_clickable_links_in_the_body() -> None:
    links = {"acknowledge": ACK_URL, "resolve": RESOLVE_URL}
    text = f"Acknowledge: {ACK_URL}\nResolve: {RESOLVE_URL}\n<b>alert</b>"
    for page in (_email("triggered", links, text), _email("triggered", links, text, str(escape(text)))):
        assert f'<a href="{ACK_URL}" style=' in page and f'<a href="{RESOLVE_URL}" style=' in page
        assert f'Acknowledge: <a href="{ACK_URL}">{ACK_URL}</a>' in page
        assert f'Resolve: <a href="{RESOLVE_URL}">{RESOLVE_URL}</a>' in page
        assert "&lt;b&gt;alert&lt;/b&gt;" in page


def test_email_buttons_follow_the_incident_status() -> None:
    links = {"acknowledge": ACK_URL, "resolve": RESOLVE_URL}
    acked = _email("acknowledged", links, "")
    assert f'href="{RESOLVE_URL}" style=' in acked and ACK_URL not in acked
    assert "/ack/" not in _email("resolved", links, "")
    hostile = _email("triggered", {"acknowledge": "javascript:alert(1)"}, "Acknowledge: javascript:alert(1)")
    assert 'href="javascript' not in hostile


def test_a_template_with_its_own_anchors_is_left_as_written() -> None:
    markup = f'<a href="{ACK_URL}">ack</a> {ACK_URL}'
    page = _email("triggered", {"acknowledge": ACK_URL}, "x", markup)
    assert f'<a href="{ACK_URL}">ack</a> {ACK_URL}</pre>' in page
