from __future__ import annotations

import pytest

from voicefleet_operator import naming as n


def test_room_names_are_unique_per_connection() -> None:
    uid = "0b6f0c4e-8f43-4b8e-9d59-6f7c2b1f2a10"
    rooms = {n.room_name("alice-agent66", c, n.derived_suffix(uid, "room", c)) for c in (1, 2, 3)}
    assert len(rooms) == 3
    # The same session and connection always get the same name (an operator restarted
    # between creating and recording finds it again); another session (uid) another one.
    again = n.room_name("alice-agent66", 1, n.derived_suffix(uid, "room", 1))
    assert again in rooms
    other = n.room_name("alice-agent66", 1, n.derived_suffix("another-uid", "room", 1))
    assert other not in rooms


def test_room_name_has_the_spec_shape_and_parses_back() -> None:
    room = n.room_name("alice-agent66", 1, "k4x9b")
    assert room == "vs-alice-agent66-1-k4x9b"
    assert n.parse_room_name(room) == ("alice-agent66", 1)


def test_room_name_of_a_session_with_digits_and_dashes_parses_back() -> None:
    room = n.room_name("bob-2-agent-7", 12, n.derived_suffix("uid-1", "x"))
    assert n.parse_room_name(room) == ("bob-2-agent-7", 12)


def test_rooms_not_made_by_voicefleet_are_not_parsed() -> None:
    for room in (
        "test-room",
        "vs-alice-0-abcde",
        "vs-alice-1-ABCDE",
        "vs--1-bcdfg",
        "vs-alice-1-bcdf",
    ):
        assert n.parse_room_name(room) is None


def test_longest_session_name_fits_every_limit() -> None:
    session = "a" * n.SESSION_NAME_MAX
    room = n.room_name(session, 2_147_483_647, n.derived_suffix("uid-1", "x"))
    assert len(room) <= n.ROOM_NAME_MAX
    assert all(len(v) <= 63 for v in n.worker_labels(session, 2_147_483_647).values())


def test_session_name_longer_than_a_label_value_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 63"):
        n.room_name("a" * 64, 1, "bcdfg")


def test_pod_name_is_a_dns_label_and_the_agent_name() -> None:
    pod = n.pod_name(n.derived_suffix("uid-1", "x"))
    assert pod.startswith("voicefleet-worker-")
    assert len(pod) == len("voicefleet-worker-") + 5
    assert pod == pod.lower()


def test_suffixes_use_the_kubernetes_alphabet_and_spread() -> None:
    suffixes = {n.derived_suffix("uid-1", "pod", 1, lost) for lost in range(2000)}
    assert all(len(s) == 5 and set(s) <= set(n.SUFFIX_ALPHABET) for s in suffixes)
    assert len(suffixes) > 1990  # 27^5 names: collisions are rare


def test_worker_labels_follow_the_spec() -> None:
    assert n.worker_labels() == {
        "app.kubernetes.io/name": "voicefleet-worker",
        "app.kubernetes.io/managed-by": "voicefleet-operator",
    }
    assert n.worker_labels("alice-agent66", 3) == {
        "app.kubernetes.io/name": "voicefleet-worker",
        "app.kubernetes.io/managed-by": "voicefleet-operator",
        "voicefleet.dev/session": "alice-agent66",
        "voicefleet.dev/connection": "3",
    }
    assert n.session_selector("alice-agent66") == (
        "app.kubernetes.io/managed-by=voicefleet-operator,voicefleet.dev/session=alice-agent66"
    )
