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

    def fixed_split(self, source: Any) -> str | None:
        """What a fixed split is (files, not drawn from a seed); None when it is drawn."""
        describe = getattr(self.load(), "fixed_split", None)
        return describe(source) if describe is not None else None


providers: Registry[LazyProvider] = Registry("dataset provider")
providers.add("correlation", LazyProvider("harness.data.correlation", "PROVIDER"))
providers.add("mnist", LazyProvider("harness.data.torchvision_sets", "MNIST_PROVIDER"))
providers.add("cifar10", LazyProvider("harness.data.torchvision_sets", "CIFAR10_PROVIDER"))
providers.add("fashion-mnist", LazyProvider("harness.data.fashion_mnist", "FASHION_MNIST_PROVIDER"))
providers.add("arrays", LazyProvider("harness.data.own_data", "ARRAYS_PROVIDER"))
providers.add("image-folder", LazyProvider("harness.data.own_data", "IMAGE_FOLDER_PROVIDER"))
providers.freeze()
