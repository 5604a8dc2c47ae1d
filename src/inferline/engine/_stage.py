"""The stage API: what a user writes so that the engine can serve a pipeline stage.

A stage is a class named in ``pipeline.yaml`` by its import path (``module:Class``).
Each replica process builds one instance, calls :meth:`StageModel.setup` once and
then :meth:`StageModel.predict` on batches of queries; :meth:`StageModel.route`
decides, per query and from the real output, which successors the query visits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["DATATYPES", "StageModel", "Tensor", "TensorSpec"]

#: The Open Inference Protocol's tensor datatypes.
DATATYPES = frozenset(
    {
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    }
)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Declared name, datatype and shape of a model input or output (-1 = any length)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise ValueError(
                f"TensorSpec {self.name!r}: unknown datatype {self.datatype!r}; "
                f"use one of {', '.join(sorted(DATATYPES))}"
            )
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    def matches_shape(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        )

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Tensor:
    """One named tensor of a request: ``data`` is flat, row-major, ``len = prod(shape)``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list[Any]

    def scalar(self) -> Any:
        """The only element of a one-element tensor (the common ``shape [1]`` input)."""
        if len(self.data) != 1:
            raise ValueError(f"tensor {self.name!r} has {len(self.data)} elements, not one")
        return self.data[0]

    def to_numpy(self) -> Any:
        """The data as a numpy array of the tensor's shape (numpy imported on first use)."""
        import numpy as np

        dtype = _NUMPY_DTYPES.get(self.datatype, object)
        return np.asarray(self.data, dtype=dtype).reshape(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __reduce__(self) -> tuple[type[Tensor], tuple[str, str, tuple[int, ...], list[Any]]]:
        # A plain constructor call: several times cheaper to pickle than a slots dataclass's
        # default state protocol, and tensors cross the IPC link at every stage.
        return (Tensor, (self.name, self.datatype, self.shape, self.data))


_NUMPY_DTYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}


class StageModel:
    """Base class of a stage (subclassing is optional: any class with ``predict`` works).

    Inputs a stage receives, one per query in the batch:

    - a **source** stage gets the request's tensors, ``dict[str, Tensor]`` by input name;
    - a stage with **one predecessor** in the graph gets that predecessor's output as is;
    - a stage with **several predecessors** (a join) gets ``dict[str, Any]``: predecessor
      name → output, for the predecessors that routed this query to it.

    Outputs: whatever the next stage expects. Outputs that end a query's path become the
    response's tensors: a ``dict`` gives one tensor per key, anything else one tensor named
    after the stage (or after the single entry of :attr:`outputs`). Numbers, strings, bools,
    (nested) lists, numpy arrays and :class:`Tensor` convert automatically.

    The engine sets :attr:`hardware`, :attr:`threads` and :attr:`device` before ``setup``.
    """

    #: Declared inputs (source stages): requests are checked against them (400 otherwise).
    inputs: ClassVar[tuple[TensorSpec, ...]] = ()
    #: Declared outputs: shown in the model metadata.
    outputs: ClassVar[tuple[TensorSpec, ...]] = ()

    hardware: str = ""
    threads: int = 1
    device: str = "cpu"

    @classmethod
    def preload(cls) -> None:
        """Heavy imports and shared read-only state, done once per stage in the template.

        On Linux the engine forks replicas from a process that has run this, so a
        scale-up does not pay it again (docs/engine.md, "Starting replicas"). Import
        libraries here (``import torch``), and build state that every replica only reads
        and that needs no thread or device, such as a model parsed into numpy arrays and
        kept in a module-level cache that ``setup`` then reads: forked replicas share it
        copy-on-write. Do not start threads, open devices or load weights into a library
        that keeps thread pools (torch): that is ``setup``'s job, in each replica.
        """

    def setup(self) -> None:
        """Load weights and warm up; runs once in the replica process before any batch."""

    def predict(self, inputs: list[Any]) -> list[Any]:
        """Process one batch: one output per input, in order."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict(inputs)")

    def route(self, output: Any) -> Iterable[str] | None:
        """Names of the successors this query visits given its output; None = all of them."""
        return None
