"""The operator's spec policy: what a job may make a worker load and run, checked when the spec is submitted.

Four rules, each refusal naming the field and the setting that would allow it:
- `trust_remote_code` (a model's own Python code, run on the worker) only with GRPO_ALLOW_REMOTE_CODE=true. It can
  reach `from_pretrained` only through `args`: `args.trust_remote_code`, which TRL forwards to the model, its
  tokenizer, the reward models and a vLLM server, and `args.model_init_kwargs`, which TRL passes to the model and
  the reward models. Reward models and datasets take no loading arguments in a spec, and LoraConfig has no such
  field; `args` and `peft_config` are searched at every depth all the same.
- no credentials in a spec (it is stored, and shown to whoever can read the job): `args.hub_token` and any other
  GRPOConfig field named like a credential, and `from_pretrained`'s own `token` in `args.model_init_kwargs`. They
  are the project's secrets instead (`shared.access.secrets`), named in the spec's `secrets` list.
- Hugging Face Hub ids (models, reward models, datasets, pushes) only with GRPO_HUB=on.
- local paths only under GRPO_MODEL_ROOTS / GRPO_DATASET_ROOTS, symlinks resolved, `..` refused, unless
  GRPO_PATHS=anywhere (what `grpo up`, one user on their own machine, sets).

A path is told from a hub id as the worker tells them (`worker/model_paths.py`, `worker/data.py`, which call the
functions here), on the API's disk: a name that exists only on a worker's disk, relative to its working directory,
looks like a hub id here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shared.settings import Settings
from shared.spec.datasets import HubDataset, PathDataset
from shared.spec.grpo_config import grpo_config_fields
from shared.spec.problems import Problem
from shared.spec.rewards import ModelReward

# What can only be a path, never a hub id (`owner/name`), as the worker decides.
PATH_PREFIXES = ("/", "./", "../", "~")
# The data files a dataset path may name (the worker's FILE_BUILDERS): such a name is a path, never a hub dataset.
DATASET_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")

REMOTE_CODE_KEY = "trust_remote_code"
# GRPOConfig fields named like a credential (hub_token in TRL 1.16): read from the stored description.
_CREDENTIAL_NAME = re.compile(r"(^|_)(token|secret|password|api_key|credentials?)$")
# from_pretrained's own credentials, which args.model_init_kwargs would pass to it.
CREDENTIAL_KWARGS = ("token", "use_auth_token")
# GRPOConfig fields that push to the Hub when set.
HUB_PUSH_ARGS = ("push_to_hub", "log_completions_hub_repo")


def is_model_path(reference: str) -> bool:
    """True where the worker loads `reference` from its disk, not from the Hub: it looks like a path, or exists."""
    return reference.startswith(PATH_PREFIXES) or os.path.exists(os.path.expanduser(reference))


def is_dataset_path(path: str) -> bool:
    """True where the worker reads a `path` dataset from its disk: as a model, or it names a data file."""
    return is_model_path(path) or Path(path).suffix.lower() in DATASET_FILE_SUFFIXES


@dataclass(frozen=True)
class SpecPolicy:
    """What this service lets a spec do. The default: no remote code, the Hub on, local paths anywhere."""

    allow_remote_code: bool = False
    hub: bool = True
    model_roots: tuple[str, ...] | None = None  # real paths of the folders; None: anywhere
    dataset_roots: tuple[str, ...] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SpecPolicy:
        """The policy the settings describe, the roots resolved now (a root may itself be a symlink)."""
        confined = settings.paths == "roots"

        def real(roots: list[Path]) -> tuple[str, ...] | None:
            return tuple(os.path.realpath(root.expanduser()) for root in roots) if confined else None

        return cls(
            allow_remote_code=settings.allow_remote_code,
            hub=settings.hub == "on",
            model_roots=real(settings.effective_model_roots),
            dataset_roots=real(settings.effective_dataset_roots),
        )


# --- Keys anywhere in args --------------------------------------------------------------------------------------


def _keyed(value: Any, path: str, keys: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every entry under one of `keys`, at any depth; a string that opens with `{` is read
    as the JSON object TRL reads it as (`args.model_init_kwargs` may be given so)."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            return  # not JSON: check_args says what is wrong with it
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if key in keys:
                yield here, item
            yield from _keyed(item, here, keys)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _keyed(item, f"{path}[{index}]", keys)


def check_remote_code(args: dict[str, Any], peft_config: dict[str, Any] | None, policy: SpecPolicy) -> list[Problem]:
    """A problem for each `trust_remote_code` a spec sets, unless the operator allows remote code."""
    if policy.allow_remote_code:
        return []
    found = [*_keyed(args, "args", (REMOTE_CODE_KEY,)), *_keyed(peft_config, "peft_config", (REMOTE_CODE_KEY,))]
    return [
        Problem(
            field,
            f"{field}: running a model's own Python code is off on this service (GRPO_ALLOW_REMOTE_CODE=true "
            "allows it)",
        )
        for field, value in found
        if value is not None and value is not False
    ]


def credential_args() -> list[str]:
    """The GRPOConfig fields that hold a credential (named like one, and taking a string)."""
    return [
        name
        for name, description in grpo_config_fields().items()
        if _CREDENTIAL_NAME.search(name) and "string" in description["types"]
    ]


def check_credentials(args: dict[str, Any]) -> list[Problem]:
    """A problem for each credential in `args`: a spec is stored and shown with its job, so it carries none."""
    fields = [f"args.{name}" for name in credential_args() if args.get(name) is not None]
    fields += [field for field, _ in _keyed(args.get("model_init_kwargs"), "args.model_init_kwargs", CREDENTIAL_KWARGS)]
    return [
        Problem(
            field,
            f"{field}: credentials may not be sent in a spec (it is stored with the job and shown to whoever can read "
            "it): remove it, store the credential as a secret of the project (POST /v1/secrets, or `grpo secrets set "
            'HF_TOKEN`) and name it in the spec\'s `secrets` list ("secrets": ["HF_TOKEN"]): the training process '
            "gets it as an environment variable",
        )
        for field in fields
    ]


# --- Models, datasets, the Hub ----------------------------------------------------------------------------------


def _roots_phrase(setting: str, roots: tuple[str, ...]) -> str:
    return f"{setting} ({', '.join(roots) or 'none'})"


def check_local_path(field: str, path: str, roots: tuple[str, ...] | None, setting: str) -> Problem | None:
    """A problem where a local path is not under one of `roots` once its symlinks are resolved (None: anywhere)."""
    if roots is None:
        return None
    where = _roots_phrase(setting, roots)
    if ".." in Path(path).parts:
        return Problem(
            field,
            f"{field} {path!r} has a '..' component, refused where local paths must lie under {where}: give the "
            "path without '..'",
        )
    real = os.path.realpath(os.path.expanduser(path))
    if any(os.path.commonpath([real, root]) == root for root in roots):
        return None
    resolved = f" (it resolves to {real!r})" if real != path else ""
    return Problem(
        field,
        f"{field} {path!r} is outside {where}{resolved}: put it in one of those folders, or have the operator "
        f"add its folder to {setting}",
    )


def _hub_off(field: str, what: str, fix: str) -> Problem:
    return Problem(
        field, f"{field} {what}, and the Hugging Face Hub is off on this service (GRPO_HUB=on allows it): {fix}"
    )


def check_model(field: str, reference: str, policy: SpecPolicy) -> Problem | None:
    """The problem, if any, with a model a spec names (`model`, or a reward model): a hub id, or a local path."""
    if is_model_path(reference):
        return check_local_path(field, reference, policy.model_roots, "GRPO_MODEL_ROOTS")
    if policy.hub:
        return None
    return _hub_off(field, f"{reference!r} is a hub id", "give the path of a saved model on the workers")


def check_reward_models(rewards: list[Any], policy: SpecPolicy) -> list[Problem]:
    """Problems of the reward models a spec (or a preview) names."""
    found = (
        check_model(f"reward_funcs[{index}].model", reward.model, policy)
        for index, reward in enumerate(rewards)
        if isinstance(reward, ModelReward)
    )
    return [problem for problem in found if problem is not None]


_DATASET_FIX = "give the path of a data file or a save_to_disk folder on the workers, or upload it (POST /v1/files)"


def check_dataset(field: str, dataset: Any, policy: SpecPolicy) -> Problem | None:
    """The problem, if any, with a dataset on the workers' disk or on the Hub (rows and uploads have none)."""
    if isinstance(dataset, HubDataset) and not policy.hub:
        return _hub_off(f"{field}.hub", f"{dataset.hub!r} is a dataset on the Hub", _DATASET_FIX)
    if not isinstance(dataset, PathDataset):
        return None
    if is_dataset_path(dataset.path):
        return check_local_path(f"{field}.path", dataset.path, policy.dataset_roots, "GRPO_DATASET_ROOTS")
    if policy.hub:
        return None
    return _hub_off(
        f"{field}.path",
        f"{dataset.path!r} is not a path (no such file here), so the worker would look it up on the Hub",
        _DATASET_FIX,
    )


def check_hub_pushes(args: dict[str, Any], policy: SpecPolicy) -> list[Problem]:
    """A problem for each push to the Hub `args` asks for where the Hub is off."""
    if policy.hub:
        return []
    return [_hub_off(f"args.{name}", "pushes to the Hub", "remove it") for name in HUB_PUSH_ARGS if args.get(name)]


class _Spec(Protocol):
    """What of a `JobSpec` the policy reads (`shared.spec.job` imports this module, so not the class itself)."""

    @property
    def model(self) -> str: ...
    @property
    def train_dataset(self) -> Any: ...
    @property
    def eval_dataset(self) -> Any: ...
    @property
    def reward_funcs(self) -> list[Any]: ...
    @property
    def args(self) -> dict[str, Any]: ...
    @property
    def peft_config(self) -> dict[str, Any] | None: ...


# from_pretrained arguments that name files of their own: an absolute `subfolder` or `gguf_file` replaces the model's
# folder (os.path.join), and the caches write where they point.
PATH_KWARGS = ("subfolder", "gguf_file", "cache_dir", "offload_folder")


def check_loading_paths(args: dict[str, Any], policy: SpecPolicy) -> list[Problem]:
    """Where local paths are confined, a problem for each loading argument that names a path of its own (it would
    load or write outside the roots), and for `args.accelerator_config` given as a file (read on the worker)."""
    if policy.model_roots is None:
        return []
    named = [field for field, _ in _keyed(args.get("model_init_kwargs"), "args.model_init_kwargs", PATH_KWARGS)]
    if isinstance(args.get("accelerator_config"), str) and not str(args["accelerator_config"]).startswith("{"):
        named.append("args.accelerator_config")
    return [
        Problem(
            field,
            f"{field} names a path of its own, refused where local paths must lie under GRPO_MODEL_ROOTS: remove it "
            "(give the model's own folder as `model`; accelerator_config as an object)",
        )
        for field in named
    ]


def check_policy(spec: _Spec, policy: SpecPolicy) -> list[Problem]:
    """Every way a job spec goes beyond what the operator allows."""
    problems = check_remote_code(spec.args, spec.peft_config, policy) + check_credentials(spec.args)
    problems += check_loading_paths(spec.args, policy)
    problems += check_hub_pushes(spec.args, policy)
    found = [
        check_model("model", spec.model, policy),
        check_dataset("train_dataset", spec.train_dataset, policy),
        check_dataset("eval_dataset", spec.eval_dataset, policy),
    ]
    return (
        problems
        + [problem for problem in found if problem is not None]
        + check_reward_models(spec.reward_funcs, policy)
    )
