"""dagrelay: run DAG flows of typed tools in-process or across Dramatiq workers.

Everything users need is importable from here; `__all__` is the public API.
"""

from executor.client import FlowExecutor
from executor.errors import (
    DagrelayError,
    FlowFailedError,
    FlowValidationError,
    RunNotFoundError,
)
from executor.handle import RunHandle
from executor.model.flow import Flow, Step, load_flow
from executor.model.retry import RetryPolicy
from executor.model.tools import Tool, ToolRegistry, default_registry, load_tools, tool
from executor.result import Attempt, ExecutionResult, StepError, StepRecord
from executor.run.events import RunEvent

__all__ = [
    "Attempt",
    "DagrelayError",
    "ExecutionResult",
    "Flow",
    "FlowExecutor",
    "FlowFailedError",
    "FlowValidationError",
    "RetryPolicy",
    "RunEvent",
    "RunHandle",
    "RunNotFoundError",
    "Step",
    "StepError",
    "StepRecord",
    "Tool",
    "ToolRegistry",
    "default_registry",
    "load_flow",
    "load_tools",
    "tool",
]
__version__ = "0.1.0"
