from __future__ import annotations

import pytest
from opfixtures import T0, at

from voicefleet_operator.api import ConnectionStatus, EndReason, Phase
from voicefleet_operator.conditions import Reason, Type, compute_phase, failure_for, set_condition


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = set_condition((), Type.READY, "False", Reason.CONNECTING, "", T0, 1)
    same = set_condition(first, Type.READY, "False", Reason.AGENT_NOT_JOINED, "waiting", at(5), 1)
    assert same[0].last_transition_time == T0 and same[0].reason == Reason.AGENT_NOT_JOINED
    flipped = set_condition(same, Type.READY, "True", Reason.AGENT_READY, "", at(9), 2)
    assert flipped[0].last_transition_time == at(9) and flipped[0].observed_generation == 2


def test_conditions_keep_a_stable_order() -> None:
    conds = ()
    for t in (Type.READY, Type.USER_CONNECTED, Type.ROOM_READY):
        conds = set_condition(conds, t, "False", Reason.CONNECTING, "", T0)
    assert [c.type for c in conds] == [Type.ROOM_READY, Type.USER_CONNECTED, Type.READY]


def _conn(**kw: object) -> ConnectionStatus:
    return ConnectionStatus(id=1, started_at=T0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("conn", "agent", "previous", "phase"),
    [
        (None, False, None, Phase.IDLE),
        (_conn(), False, None, Phase.CONNECTING),
        (_conn(), True, Phase.CONNECTING, Phase.READY),
        (_conn(end_reason=EndReason.USER_LEFT), False, Phase.READY, Phase.READY),
        (_conn(end_reason=EndReason.USER_LEFT, ended_at=T0), False, Phase.READY, Phase.IDLE),
        (
            _conn(
                end_reason=EndReason.WORKER_FAILED, ended_at=T0, failure=Reason.IMAGE_PULL_FAILED
            ),
            False,
            Phase.CONNECTING,
            Phase.FAILED,
        ),
    ],
)
def test_phase_follows_the_connection(
    conn: ConnectionStatus | None, agent: bool, previous: Phase | None, phase: Phase
) -> None:
    assert compute_phase(conn, agent, previous) is phase


def test_invalid_spec_is_failed_whatever_the_connection() -> None:
    assert compute_phase(_conn(), True, Phase.READY, invalid_spec=True) is Phase.FAILED


@pytest.mark.parametrize(
    ("end", "stuck_at", "failure"),
    [
        (EndReason.USER_LEFT, Reason.AGENT_READY, None),
        (EndReason.SUPERSEDED, Reason.AGENT_NOT_JOINED, None),
        (EndReason.MAX_DURATION, Reason.AGENT_READY, None),
        (EndReason.JOIN_TIMEOUT, Reason.AGENT_READY, None),
        (EndReason.JOIN_TIMEOUT, Reason.AGENT_BUSY, Reason.AGENT_BUSY),
        (EndReason.JOIN_TIMEOUT, Reason.AGENT_NOT_JOINED, Reason.AGENT_NOT_JOINED),
        (EndReason.WORKER_FAILED, Reason.IMAGE_PULL_FAILED, Reason.IMAGE_PULL_FAILED),
        (EndReason.WORKER_FAILED, Reason.AGENT_READY, Reason.WORKER_FAILED),
    ],
)
def test_a_connection_fails_only_when_it_could_not_be_served(
    end: EndReason, stuck_at: str, failure: str | None
) -> None:
    assert failure_for(end, stuck_at) == failure
