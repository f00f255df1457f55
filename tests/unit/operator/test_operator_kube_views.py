"""How Kubernetes pods are seen by the plan (the client's only translation)."""

from __future__ import annotations

from typing import Any

from voicefleet_operator.clients.kube import pod_view


def pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "voicefleet-worker-bcdfg",
            "labels": {"voicefleet.dev/connection": "2"},
        },
        "status": status,
    }


def test_a_ready_running_pod() -> None:
    view = pod_view(
        pod(
            phase="Running",
            conditions=[{"type": "Ready", "status": "True"}],
            containerStatuses=[
                {
                    "name": "worker",
                    "image": "i",
                    "imageID": "",
                    "ready": True,
                    "restartCount": 1,
                    "state": {"running": {}},
                }
            ],
        )
    )
    assert (view.name, view.connection, view.phase, view.ready, view.restarts) == (
        "voicefleet-worker-bcdfg",
        2,
        "Running",
        True,
        1,
    )


def test_image_pull_trouble_and_unschedulable_are_visible() -> None:
    view = pod_view(
        pod(
            phase="Pending",
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes",
                }
            ],
            containerStatuses=[
                {
                    "name": "worker",
                    "image": "i",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
                }
            ],
        )
    )
    assert view.waiting_reason == "ImagePullBackOff" and view.unschedulable == "0/3 nodes"
    assert not view.ready


def test_a_pod_being_deleted_says_so() -> None:
    view = pod_view({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}})
    assert view.deleting


def test_a_listed_client_model_reads_the_same_as_a_watch_event() -> None:
    from kubernetes.aio.client import ApiClient, V1Pod

    raw = pod(phase="Running", conditions=[{"type": "Ready", "status": "True"}])
    model = V1Pod.from_dict(raw)
    assert pod_view(ApiClient().sanitize_for_serialization(model)) == pod_view(raw)


def test_a_pod_without_status_is_pending() -> None:
    view = pod_view({"metadata": {"name": "p", "labels": {}}})
    assert (view.phase, view.connection, view.ready) == ("Pending", None, False)


def test_how_the_container_last_ended_is_kept_oom_kill_included() -> None:
    restarted = pod(
        phase="Running",
        containerStatuses=[
            {
                "name": "worker",
                "restartCount": 1,
                "state": {"running": {}},
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
            }
        ],
    )
    assert pod_view(restarted).last_exit == "OOMKilled, exit code 137"
    failed = pod(
        phase="Failed",
        containerStatuses=[{"name": "worker", "state": {"terminated": {"reason": "Error"}}}],
    )
    assert pod_view(failed).last_exit == "Error"
    assert pod_view(pod(phase="Running")).last_exit is None
