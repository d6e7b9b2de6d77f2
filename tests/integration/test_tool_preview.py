"""POST /v1/tools/preview over HTTP to a real `grpo serve`: tools and an environment tried on given calls in the real
sandbox, their results, errors and printed output coming back; sources a job would refuse are a 422."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.callers import Caller, serve_for_module
from tests.processes import Service

LOOKUP = '''
CITIES = {"paris": 2.1, "tokyo": 14.0}

def population(city: str) -> float:
    """The population of a city, in millions.

    Args:
        city: The city's name.
    """
    print("looking up", city)
    return CITIES[city.lower()]
'''
COUNTER = '''
class Counter:
    def reset(self, **row):
        self.n = row.get("start", 0)
        return f" (the counter is at {self.n})"

    def increment(self, by: int) -> str:
        """Add to the counter.

        Args:
            by: How much to add.
        """
        self.n += by
        return str(self.n)

    def get_reward(self) -> float:
        return 1.0 if self.n == 10 else 0.0
'''


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with serve_for_module(tmp_path_factory, "tool-preview") as running:
        yield running


@pytest.fixture(scope="module")
def member(service: Service) -> Iterator[Caller]:
    caller = Caller(service, "member", service.make_key("default", "member"))
    yield caller
    caller.close()


def _preview(member: Caller, **body: object) -> dict[str, object]:
    response = member.post("/v1/tools/preview", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_tools_answer_and_a_failing_call_tells_what_the_model_would_read(member: Caller) -> None:
    answer = _preview(
        member,
        tools=[{"type": "python", "source": LOOKUP}, {"type": "builtin", "name": "calculator"}],
        calls=[
            {"name": "population", "arguments": {"city": "Paris"}},
            {"name": "population", "arguments": {"city": "Atlantis"}},
            {"name": "calculator", "arguments": {"expression": "(3 + 4) * 2"}},
            {"name": "nothing", "arguments": {}},
        ],
    )
    calls = answer["calls"]
    assert isinstance(calls, list)
    assert [call["result"] for call in calls] == ["2.1", None, "14", None]
    assert calls[1]["error"].startswith("tool 'population' raised KeyError: 'atlantis' (tools[0] line 11")
    assert calls[3]["error"] == "Tool nothing not found."
    assert answer["output"] == "looking up Paris\nlooking up Atlantis\n"
    assert answer["sandbox"]  # what the kernel enforced is said


def test_an_environment_is_reset_with_the_row_keeps_its_state_and_scores_the_rollout(member: Caller) -> None:
    answer = _preview(
        member,
        environment_factory={"type": "python", "source": COUNTER, "class": "Counter"},
        row={"prompt": "Count to ten.", "start": 4},
        calls=[{"name": "increment", "arguments": {"by": 5}}, {"name": "increment", "arguments": {"by": 1}}],
    )
    assert answer["observation"] == " (the counter is at 4)"
    assert [call["result"] for call in answer["calls"]] == ["9", "10"]  # type: ignore[union-attr]
    assert answer["reward"] == 1.0 and answer["error"] is None


def test_sources_a_job_would_refuse_are_a_422_naming_the_parameter(member: Caller) -> None:
    untyped = "def f(x):\n    '''Do.\n\n    Args:\n        x: it\n    '''\n    return x\n"
    response = member.post(
        "/v1/tools/preview",
        json={"tools": [{"type": "python", "source": untyped}], "calls": [{"name": "f", "arguments": {"x": 1}}]},
    )
    assert response.status_code == 422
    assert response.json()["error"]["errors"][0] == {
        "field": "tools[0].source",
        "message": "parameter 'x' of f() has no type hint: add one (int, float, str, bool, list[...], ...)",
    }


def test_a_viewer_may_not_run_code(service: Service) -> None:
    viewer = Caller(service, "viewer", service.make_key("default", "viewer"))
    response = viewer.post(
        "/v1/tools/preview",
        json={"tools": [{"type": "builtin", "name": "calculator"}], "calls": [{"name": "calculator"}]},
    )
    assert response.status_code == 403
