"""The dataset providers by name, each bound lazily to the module that implements it.

The task spec checks a provider's name here without importing the data layer (which
imports the spec), and ``data.prepare_split`` loads the provider on first use: torchvision
costs seconds to import, and most runs (``grade --help``, correlation grading, Ray
workers) never need it. A new provider is one line below and a module-level object with
``fingerprint(source)`` and ``prepare(source)`` (see ``data.DatasetProvider``).
"""

from __future__ import annotations

import importlib
from typing import Any

from .registry import Registry


class LazyProvider:
    """A provider whose module is imported on first use."""

    def __init__(self, module: str, attr: str) -> None:
        self.module, self.attr = module, attr

    def load(self) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.load(), name)

    def fingerprint(self, source: Any) -> dict[str, object]:
        result: dict[str, object] = self.load().fingerprint(source)
        return result

    def prepare(self, source: Any) -> Any:
        return self.load().prepare(source)

    def uses_seed(self, source: Any) -> bool:
        return bool(self.load().uses_seed(source))


providers: Registry[LazyProvider] = Registry("dataset provider")
providers.add("correlation", LazyProvider("harness.data.correlation", "PROVIDER"))
providers.add("mnist", LazyProvider("harness.data.torchvision_sets", "MNIST_PROVIDER"))
providers.add("cifar10", LazyProvider("harness.data.torchvision_sets", "CIFAR10_PROVIDER"))
providers.freeze()
