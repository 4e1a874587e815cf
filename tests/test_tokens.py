"""Subscribe tokens (mboard.node.subscriptions): what they allow, and why each bad one is refused.

A token is checked by the node that streams, with nothing but the cluster secret: these are the
rules it applies. The same refusals over real gRPC are in test_subscriptions.py.
"""

from __future__ import annotations

import base64

import pytest

from mboard.node.subscriptions import refuse_token, sign_token

SECRET = b"cluster secret"
NOW = 1_000_000.0
LATER = NOW + 600


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_for(user_id: int = 1, topic_ids: tuple[int, ...] = (1, 2), node_id: str = "n1") -> str:
    return sign_token(SECRET, user_id, topic_ids, node_id, LATER)


def test_a_token_allows_its_user_its_topics_and_its_node() -> None:
    token = token_for()
    assert refuse_token(SECRET, token, 1, [1, 2], "n1", NOW) is None
    assert refuse_token(SECRET, token, 1, [2, 1, 2], "n1", NOW) is None  # order, repeats
    assert refuse_token(SECRET, token, 1, [2], "n1", NOW) is None  # fewer topics than granted


def test_claims_are_plain_base64url_json_in_one_canonical_form() -> None:
    payload, _ = token_for(topic_ids=(2, 1, 2)).split(".")
    assert unb64(payload) == b'{"e":1000600,"n":"n1","t":[1,2],"u":1}'


def _tampered() -> str:
    """Another user's claims under a genuine signature."""
    _, signature = token_for(user_id=1).split(".")
    payload, _ = token_for(user_id=2).split(".")
    return f"{payload}.{signature}"


def _reencoded_claims() -> str:
    """The genuine claims, re-serialized differently: still not what was signed."""
    payload, signature = token_for().split(".")
    spaced = unb64(payload).replace(b",", b", ")
    return f"{b64(spaced)}.{signature}"


@pytest.mark.parametrize(
    ("token", "secret", "user_id", "topic_ids", "node_id", "now", "reason"),
    [
        pytest.param(
            sign_token(b"another secret", 1, [1, 2], "n1", LATER), SECRET, 1, [1], "n1", NOW,
            "the subscribe token's signature is not valid", id="forged",
        ),
        pytest.param(
            _tampered(), SECRET, 2, [1], "n1", NOW,
            "the subscribe token's signature is not valid", id="tampered-claims",
        ),
        pytest.param(
            _reencoded_claims(), SECRET, 1, [1], "n1", NOW,
            "the subscribe token's signature is not valid", id="reencoded-claims",
        ),
        pytest.param(
            token_for(), b"", 1, [1], "n1", NOW,
            "the subscribe token's signature is not valid", id="node-without-secret",
        ),
        pytest.param(
            token_for(), SECRET, 1, [1], "n1", LATER,
            "the subscribe token has expired; ask the head for a new one", id="expired",
        ),
        pytest.param(
            token_for(), SECRET, 1, [1], "n2", NOW,
            "the subscribe token is for node n1, not n2", id="other-node",
        ),
        pytest.param(
            token_for(), SECRET, 7, [1], "n1", NOW,
            "the subscribe token is for user 1, not 7", id="other-user",
        ),
        pytest.param(
            token_for(), SECRET, 1, [3, 1, 4], "n1", NOW,
            "the subscribe token does not cover topics [3, 4]", id="topics-outside",
        ),
        pytest.param(
            "", SECRET, 1, [1], "n1", NOW, "the subscribe token is malformed", id="empty",
        ),
        pytest.param(
            "no-dot-here", SECRET, 1, [1], "n1", NOW,
            "the subscribe token is malformed", id="one-part",
        ),
        pytest.param(
            token_for() + ".x", SECRET, 1, [1], "n1", NOW,
            "the subscribe token is malformed", id="three-parts",
        ),
        pytest.param(
            "x.y", SECRET, 1, [1], "n1", NOW,
            "the subscribe token is malformed", id="not-base64",
        ),
        pytest.param(
            "žeton.podpis", SECRET, 1, [1], "n1", NOW,
            "the subscribe token is malformed", id="not-ascii",
        ),
    ],
)  # fmt: skip
def test_a_bad_token_is_refused_with_its_reason(
    token: str,
    secret: bytes,
    user_id: int,
    topic_ids: list[int],
    node_id: str,
    now: float,
    reason: str,
) -> None:
    assert refuse_token(secret, token, user_id, topic_ids, node_id, now) == reason


def test_a_token_is_valid_until_the_second_it_expires() -> None:
    token = token_for()
    assert refuse_token(SECRET, token, 1, [1], "n1", LATER - 0.001) is None
    assert refuse_token(SECRET, token, 1, [1], "n1", LATER) is not None
