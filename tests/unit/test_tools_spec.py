"""Tools and environments in a spec, read without running them: what is refused at submit (naming the field and the
parameter), and that the reading agrees with transformers' own schema builder, which TRL uses."""

from __future__ import annotations

from typing import Any

import pytest
from transformers.utils import get_json_schema

from shared.spec.job import JobSpec, check_spec
from shared.spec.tool_source import read_tools, type_hint
from shared.spec.tools import PythonTool
from tests.specs import COUNTER, job_spec

GOOD_TOOL = '''
def add(a: int, b: int = 2) -> int:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b
'''


def _problems(**fields: Any) -> list[tuple[str, str]]:
    spec = JobSpec.model_validate({**job_spec("m"), **fields})
    return [(problem.field, problem.message) for problem in check_spec(spec)]


def _python_tool(source: str, function: str | None = None) -> dict[str, Any]:
    return {"type": "python", "source": source, **({"function": function} if function else {})}


def _environment(source: str = COUNTER, name: str = "Counter") -> dict[str, Any]:
    return {"type": "python", "source": source, "class": name}


def test_a_well_formed_tool_an_environment_and_a_builtin_pass() -> None:
    assert _problems(tools=[_python_tool(GOOD_TOOL), {"type": "builtin", "name": "calculator"}]) == []
    assert _problems(environment_factory=_environment()) == []


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("def f(x):\n    '''Do.\n\n    Args:\n        x: it\n    '''\n", "parameter 'x' of f() has no type hint"),
        ("def f(x: int):\n    return x\n", "f() has no docstring"),
        ("def f(x: int, y: str):\n    '''Do.\n\n    Args:\n        x: it\n    '''\n", "'y' of f() is not described"),
        ("import os\ndef f(x: os.PathLike):\n    '''Do.\n\n    Args:\n        x: it\n    '''\n", "is not one the tool"),
        ("def f(*args: int):\n    '''Do.'''\n", "takes *args or **kwargs"),
        ("def f(:\n", "does not compile"),
        ("def f(x: dict = {[]: 1}):\n    '''Do.\n\n    Args:\n        x: it\n    '''\n", "default is not a literal"),
    ],
)
def test_a_tool_transformers_could_not_describe_is_refused_naming_the_parameter(source: str, words: str) -> None:
    problems = _problems(tools=[_python_tool(source)])
    assert problems and problems[0][0] == "tools[0].source", problems
    assert words in problems[0][1]


def test_what_is_refused_here_is_what_get_json_schema_refuses() -> None:
    """The same sources through this module and through transformers (the sources are run here, in the test)."""
    sources = [
        GOOD_TOOL,
        "def f(x: list[int], mode: str = 'a') -> str:\n    '''Do.\n\n    Args:\n        x: them\n        mode: how\n"
        "    '''\n",
        "def f(x: int | None):\n    '''Do.\n\n    Args:\n        x: it\n    '''\n",
        "from typing import Literal\ndef f(x: Literal['a', 'b']):\n    '''Do.\n\n    Args:\n        x: one\n    '''\n",
        "def f(x):\n    '''Do.\n\n    Args:\n        x: it\n    '''\n",
        "def f(x: int):\n    return x\n",
        "def f(x: int, y: str):\n    '''Do.\n\n    Args:\n        x: it\n    '''\n",
    ]
    for source in sources:
        namespace: dict[str, Any] = {}
        exec(source, namespace)
        function = next(value for name, value in namespace.items() if name in ("add", "f"))
        try:
            get_json_schema(function)
            accepted = True
        except Exception:
            accepted = False
        _, problems = read_tools(PythonTool(type="python", source=source), "tools[0]")
        assert accepted == (not problems), (source, problems)


def test_type_hints_are_read_from_a_small_vocabulary_only() -> None:
    assert type_hint("list[int] | None") == (list[int] | None)
    for hostile in ("__import__('os')", "int.__class__", "open", "(lambda: 1)()", '"a" | "b"', "Union[()]"):
        with pytest.raises((ValueError, SyntaxError)):
            type_hint(hostile)


def test_an_environment_needs_reset_and_tools_its_methods_describe() -> None:
    no_reset = (
        "class E:\n    def step(self, x: int) -> str:\n        '''Go.\n\n        Args:\n            x: it\n"
        "        '''\n"
    )
    field, message = _problems(environment_factory=_environment(no_reset, "E"))[0]
    assert field == "environment_factory.source" and message.startswith("class E has no `reset` method")
    missing = _problems(environment_factory=_environment(COUNTER, "Nope"))
    assert missing[0][0] == "environment_factory.class" and "no class 'Nope'" in missing[0][1]
    foreign = "import collections\nclass E(collections.OrderedDict):\n    def reset(self, **row):\n        pass\n"
    assert "inherits from collections.OrderedDict" in _problems(environment_factory=_environment(foreign, "E"))[0][1]


def test_rewards_may_be_empty_and_the_dataset_absent_only_where_the_environment_takes_their_place() -> None:
    assert _problems(reward_funcs=[], environment_factory=_environment()) == []
    no_reward = COUNTER.replace("def get_reward", "def _get_reward")
    assert _problems(reward_funcs=[], environment_factory=_environment(no_reward))[0][0] == "reward_funcs"
    assert _problems(reward_funcs=[])[0][0] == "reward_funcs"

    spec = {**job_spec("m"), "environment_factory": _environment()}
    del spec["train_dataset"]
    assert [p.field for p in check_spec(JobSpec.model_validate(spec))] == []  # job_spec sets max_steps 8
    spec["args"] = {k: v for k, v in spec["args"].items() if k != "max_steps"}
    assert [p.field for p in check_spec(JobSpec.model_validate(spec))] == ["args.max_steps"]
    plain = {key: value for key, value in job_spec("m").items() if key != "train_dataset"}
    assert [p.field for p in check_spec(JobSpec.model_validate(plain))] == ["train_dataset"]


def test_a_dict_of_environments_is_picked_by_the_rows_environment_column() -> None:
    environments = {"counter": _environment(), "other": _environment()}
    rows = [{"prompt": "a", "environment": "counter"}, {"prompt": "b", "environment": "other"}]
    assert _problems(environment_factory=environments, train_dataset={"rows": rows}) == []
    wrong = [{"prompt": "a", "environment": "counter"}, {"prompt": "b", "environment": "nope"}]
    problems = _problems(environment_factory=environments, train_dataset={"rows": wrong})
    assert problems[0][0] == "train_dataset.rows[1].environment" and "'nope'" in problems[0][1]
    unnamed = _problems(environment_factory=environments)
    assert unnamed[0][0] == "train_dataset.rows[0]" and "'environment' column" in unnamed[0][1]


def test_two_tools_of_one_name_are_refused() -> None:
    problems = _problems(tools=[_python_tool(GOOD_TOOL), _python_tool(GOOD_TOOL)])
    assert problems[0][0] == "tools[1]" and "both offer a tool named 'add'" in problems[0][1]
