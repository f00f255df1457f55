"""The real node's container logs outlive their pods (voicefleet_stack/podlogs.py)."""

from __future__ import annotations

from pathlib import Path

from voicefleet_stack.podlogs import keep_once


def test_a_container_log_is_kept_with_later_lines_after_the_kubelet_deletes_it(
    tmp_path: Path,
) -> None:
    source, dest = tmp_path / "pod-logs", tmp_path / "kept"
    log = source / "voicefleet_voicefleet-worker-abcde_0f1e2d" / "worker" / "0.log"
    log.parent.mkdir(parents=True)
    log.write_text("starting\n")
    linked: set[int] = set()
    assert keep_once(source, dest, linked) == 1
    assert keep_once(source, dest, linked) == 0  # once per file
    with log.open("a") as f:
        f.write("job ended\n")
    log.unlink()  # the pod is gone: the kubelet removes its log folder
    kept = dest / "voicefleet_voicefleet-worker-abcde" / "worker" / "0.log"
    assert kept.read_text() == "starting\njob ended\n"


def test_a_rotated_log_keeps_both_files(tmp_path: Path) -> None:
    source, dest = tmp_path / "pod-logs", tmp_path / "kept"
    folder = source / "ns_pod_uid" / "worker"
    folder.mkdir(parents=True)
    (folder / "0.log").write_text("old\n")
    linked: set[int] = set()
    keep_once(source, dest, linked)
    (folder / "0.log").rename(folder / "0.log.20261126-120000")
    (folder / "0.log").write_text("new\n")
    keep_once(source, dest, linked)
    texts = sorted(p.read_text() for p in (dest / "ns_pod" / "worker").iterdir())
    assert texts == ["new\n", "old\n"]
