"""Where a stalled job is stuck, as its failure says it: read from the stack faulthandler writes."""

import sysconfig

from worker.training_process import innermost_frames

STDLIB = sysconfig.get_paths()["stdlib"]


def faulthandler_dump(*frames: tuple[str, int, str]) -> str:
    lines = ["Thread 0x00007f0 (most recent call first):", '  File "/x/other.py", line 1 in elsewhere', ""]
    lines.append("Current thread 0x00007f1 (most recent call first):")
    lines += [f'  File "{file}", line {line} in {function}' for file, line, function in frames]
    return "\n".join(lines) + "\n"


def test_one_frame_per_file_so_that_the_users_code_shows_behind_the_plumbing() -> None:
    dump = faulthandler_dump(
        (f"{STDLIB}/socket.py", 700, "recv_into"),
        ("/app/sandbox/client.py", 232, "_receive"),
        ("/app/sandbox/client.py", 187, "request"),
        ("/app/sandbox/client.py", 170, "call"),
        ("/app/worker/rewards.py", 88, "forever"),
        ("/venv/trl/grpo_trainer.py", 1200, "_calculate_rewards"),
        ("/venv/trl/grpo_trainer.py", 1100, "_generate_and_score"),
    )
    assert innermost_frames(dump) == [
        "_receive (client.py:232)",
        "forever (rewards.py:88)",
        "_calculate_rewards (grpo_trainer.py:1200)",
    ]


def test_a_file_met_again_further_out_counts_again() -> None:
    dump = faulthandler_dump(("/a/x.py", 1, "inner"), ("/a/y.py", 2, "middle"), ("/a/x.py", 3, "outer"))
    assert innermost_frames(dump, count=5) == ["inner (x.py:1)", "middle (y.py:2)", "outer (x.py:3)"]


def test_no_stack_of_the_current_thread_says_nothing() -> None:
    assert innermost_frames("Fatal Python error: Aborted\n") == []
