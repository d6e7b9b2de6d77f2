"""The messages between a worker and its training child: one wire format, read back as the same typed values."""

from __future__ import annotations

from multiprocessing import Pipe

from worker.protocol import Outcome, Progress, StopRequest, WorkerLink, from_wire, receive, to_wire


def test_every_message_reads_back_as_the_value_that_was_sent() -> None:
    outcome = Outcome(False, "boom", "Traceback ...", {"train_loss": 0.5}, stopped_at_step=3)
    for message in (Progress(7), StopRequest("pause"), StopRequest(None), outcome, Outcome.failed("no GPU")):
        assert from_wire(to_wire(message)) == message


def test_the_wire_format_is_the_one_both_ends_have_always_spoken() -> None:
    assert to_wire(Progress(2)) == {"type": "progress", "step": 2}
    assert to_wire(StopRequest("handoff")) == {"cmd": "stop", "reason": "handoff"}
    assert to_wire(Outcome.failed("boom")) == {
        "type": "outcome",
        "succeeded": False,
        "error": "boom",
        "traceback": None,
        "summary": {},
        "stopped_at_step": None,
        "pause_because": None,  # added later: a message without it still reads (from_wire's .get)
    }
    paused = Outcome(False, "out of reach", pause_because="out of reach")
    assert from_wire(to_wire(paused)) == paused
    assert from_wire({"type": "outcome", "succeeded": True}) == Outcome(True)


def test_a_message_this_side_does_not_know_is_ignored() -> None:
    assert from_wire({"type": "something-new"}) is None


def test_the_childs_link_sends_progress_and_its_outcome_to_the_worker() -> None:
    worker_end, child_end = Pipe()
    link = WorkerLink(child_end)
    link.progress(4)
    link.send(Outcome(True, summary={"train_runtime": 1.0}))
    assert receive(worker_end) == Progress(4)
    assert receive(worker_end) == Outcome(True, summary={"train_runtime": 1.0})
    worker_end.close()
    child_end.close()
