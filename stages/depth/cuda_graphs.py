"""Device work replayed from CUDA graphs: one launch for a whole forward instead of hundreds of small ones.

The stage's host threads, not the GPU, were what its batches waited for (docs/depth.md): every op is host time in
Python and the CUDA driver. A function of tensors with fixed shapes and no host synchronisation is captured once per
input shapes and replayed; the replay writes the same buffers each time, so outputs are cloned before they are
returned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_map

log = logging.getLogger(__name__)


class CapturedForward:
    """One call of `function` captured in a CUDA graph for inputs like `examples`, on the calling thread's current
    stream.

    Warm-up calls and the capture run on a stream of its own (what capture requires; torch's default capture stream
    is shared by all threads). The capture is `thread_local`: another thread's work on the device (the next batch's
    decoding) does not invalidate it.
    """

    def __init__(self, function: Callable[..., Any], examples: tuple[torch.Tensor, ...], warmups: int = 2) -> None:
        self.inputs = tuple(example.clone() for example in examples)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmups):
                function(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=side, capture_error_mode="thread_local"):
            self.output = function(*self.inputs)

    def __call__(self, *tensors: torch.Tensor) -> Any:
        for static, tensor in zip(self.inputs, tensors):
            static.copy_(tensor)
        self.graph.replay()
        return tree_map(lambda value: value.clone() if isinstance(value, torch.Tensor) else value, self.output)


class GraphCache:
    """`function` replayed from a graph captured on the first call with each input shape. A capture that fails (a
    function that synchronises with the host) is logged and `function` runs as it is from then on; `enabled=False`
    runs it as it is too (what the graphs give, in the benchmark)."""

    def __init__(self, function: Callable[..., Any], name: str) -> None:
        self.function, self.name, self.enabled = function, name, True
        self.graphs: dict[tuple[Any, ...], CapturedForward] = {}

    def __call__(self, *tensors: torch.Tensor) -> Any:
        if not self.enabled:
            return self.function(*tensors)
        key = tuple((tuple(tensor.shape), tensor.dtype, tensor.stride()) for tensor in tensors)
        if key not in self.graphs:
            try:
                self.graphs[key] = CapturedForward(self.function, tensors)
            except torch._dynamo.exc.TorchDynamoException:
                raise  # the compile failed, not the capture: the caller's fallback
            except RuntimeError as error:
                log.warning("CUDA graph capture of the %s failed (%s); running it without graphs "
                            "(stage.cuda_graphs=false skips the attempt)", self.name, str(error).splitlines()[0])
                self.enabled = False
                return self.function(*tensors)
        return self.graphs[key](*tensors)
