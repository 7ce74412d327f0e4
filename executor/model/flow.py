"""`Flow`: a flow's steps and settings with what users do with it: check, read, write."""

from __future__ import annotations

from pathlib import Path

from executor.model.dag import Dag
from executor.model.files import dump_flow, load_flow_file, parse_flow
from executor.model.spec import FlowSpec
from executor.model.tools import ToolRegistry
from executor.model.validation import validate_flow


class Flow(FlowSpec):
    """A DAG of steps, with what the run returns and how it reacts to failure."""

    def validate_flow(self, registry: ToolRegistry | None = None) -> Dag:
        """Check the flow and return its dependency graph; see `validate`."""
        return validate_flow(self, registry)

    def validate(self, registry: ToolRegistry | None = None) -> Flow:  # type: ignore[override]
        """Report every problem at once.

        Args:
            registry: the tools to check names and inputs against; None checks the
                structure only (ids, references, cycles, predicates).
        Returns:
            the flow itself, so calls can be chained.
        Raises:
            FlowValidationError: with `.problems`, one line each.
        """
        self.validate_flow(registry)
        return self

    @classmethod
    def from_yaml(cls, text: str | bytes, source: str | None = None) -> Flow:
        """Parse a YAML flow (safe_load, with size/depth/step limits)."""
        return parse_flow(text, "yaml", source, cls)

    @classmethod
    def from_json(cls, text: str | bytes, source: str | None = None) -> Flow:
        """Parse a JSON flow (with size/depth/step limits)."""
        return parse_flow(text, "json", source, cls)

    def to_yaml(self) -> str:
        """The flow as YAML that `from_yaml` reads back."""
        return dump_flow(self, "yaml")

    def to_json(self) -> str:
        """The flow as JSON that `from_json` reads back."""
        return dump_flow(self, "json")


def load_flow(path: str | Path) -> Flow:
    """Read a flow file (`.yaml`, `.yml` or `.json`).

    Raises:
        FlowValidationError: naming the file and the problem; never a parser traceback.
    """
    return load_flow_file(path, Flow)
