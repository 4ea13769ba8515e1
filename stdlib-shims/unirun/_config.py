"""RuntimeConfig: the settings every decision reads, from code or from the environment."""

from __future__ import annotations

import dataclasses
import os
from typing import Literal, Mapping, Optional

__all__ = ["RuntimeConfig", "FLAVORS", "THREAD_MODES", "WORKER_POLICIES", "FALLBACKS"]

FLAVORS = ("auto", "threads", "processes", "interpreters", "none", "distributed")
THREAD_MODES = ("auto", "gil", "nogil")
# auto: each flavor's standard default (threads: min(32, cpus + 4), as ThreadPoolExecutor;
# processes and interpreters: one per usable CPU); cpus: one worker per usable CPU, any flavor.
WORKER_POLICIES = ("auto", "cpus")
# What interpreter work does where subinterpreter workers are not available.
FALLBACKS = ("error", "threads", "processes")

Flavor = Literal["auto", "threads", "processes", "interpreters", "none", "distributed"]
ThreadMode = Literal["auto", "gil", "nogil"]


def _check_choice(field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not valid; use one of: {', '.join(allowed)}")


def _check_workers(field: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{field}={value!r} is not valid; use a positive integer")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """How unirun decides. Frozen: derive variants with dataclasses.replace()."""

    thread_mode: ThreadMode = "auto"
    flavor: Flavor = "auto"
    max_workers: Optional[int] = None
    worker_policy: Literal["auto", "cpus"] = "auto"
    interpreter_fallback: Literal["error", "threads", "processes"] = "processes"
    trace_path: Optional[str] = None
    # The distributed flavor: a Dask scheduler's address ("tcp://host:8786"); None starts a
    # LocalCluster on this machine for each scope.
    distributed_address: Optional[str] = None

    def __post_init__(self) -> None:
        _check_choice("thread_mode", self.thread_mode, THREAD_MODES)
        _check_choice("flavor", self.flavor, FLAVORS)
        _check_workers("max_workers", self.max_workers)
        _check_choice("worker_policy", self.worker_policy, WORKER_POLICIES)
        _check_choice("interpreter_fallback", self.interpreter_fallback, FALLBACKS)
        if self.trace_path is not None and not isinstance(self.trace_path, str):
            raise ValueError(f"trace_path={self.trace_path!r} is not valid; use a path string")
        if self.distributed_address is not None and (not isinstance(self.distributed_address, str)
                                                     or not self.distributed_address.strip()):
            raise ValueError(f"distributed_address={self.distributed_address!r} is not valid; use a scheduler "
                             "address such as 'tcp://scheduler:8786'")

    # Environment variable → field. An empty variable counts as unset, as python's own do.
    ENVIRONMENT = {
        "UNIRUN_THREAD_MODE": "thread_mode",
        "UNIRUN_FLAVOR": "flavor",
        "UNIRUN_MAX_WORKERS": "max_workers",
        "UNIRUN_WORKER_POLICY": "worker_policy",
        "UNIRUN_INTERPRETER_FALLBACK": "interpreter_fallback",
        "UNIRUN_TRACE": "trace_path",
        "UNIRUN_DASK_ADDRESS": "distributed_address",
    }

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "RuntimeConfig":
        """Read the UNIRUN_* variables; an invalid value raises ValueError naming the variable
        and the values it takes."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for variable, field in cls.ENVIRONMENT.items():
            text = environ.get(variable, "")
            if not text:
                continue
            if field == "max_workers":
                try:
                    number = int(text)
                except ValueError:
                    number = 0
                if number <= 0:
                    raise ValueError(f"{variable}={text!r} is not valid; use a positive integer")
                values[field] = number
                continue
            allowed = {
                "thread_mode": THREAD_MODES,
                "flavor": FLAVORS,
                "worker_policy": WORKER_POLICIES,
                "interpreter_fallback": FALLBACKS,
            }.get(field)
            if allowed is not None and text not in allowed:
                raise ValueError(f"{variable}={text!r} is not valid; use one of: {', '.join(allowed)}")
            values[field] = text
        return cls(**values)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)
