"""Stand-ins for torch, triton and the GPU kernel packages, enough for SGLang's argument parser
(``prepare_server_args``) and its resolution (``ServerArgs.resolve_once``) to import and run in a
process with no GPU and no torch: what ``tests/realsglang/check_engines.py`` installs first.

Nothing here computes. Module attributes that sglang reads at import time resolve to inert
placeholders (callable, subscriptable, usable as base classes and decorators); what resolution
asks of the device is answered as an 8 x H100 80 GB CUDA machine would: ``torch.cuda`` and
``torch.version`` are explicit, and the other accelerators (NPU, HPU, XPU, MPS, MUSA, ROCm)
are absent, so sglang takes its CUDA paths.
"""

from __future__ import annotations

import abc
import importlib
import importlib.abc
import importlib.machinery
import re
import sys
import types
from typing import Any

#: the packages replaced: torch and what is built on it (kernels, compilers, GPU runtimes)
ROOTS = frozenset({
    "torch", "torchvision", "torchaudio", "triton", "tvm_ffi", "sgl_kernel", "flashinfer",
    "deep_gemm", "sgl_deep_ep", "flash_mla", "flash_attn", "cuda", "nvidia", "cutlass", "quack",
    "tilelang", "humming", "torch_memory_saver", "numba", "xgrammar", "llguidance",
})

VERSIONS = {"torch": "2.14.1", "torchvision": "0.29.1", "torchaudio": "2.11.0", "triton": "3.7.0"}

#: attributes that must be submodules (imported on first use), not placeholders
SUBMODULES = frozenset({
    "torch.version", "torch.cuda", "torch.distributed", "torch.nn", "torch.library",
    "torch.utils", "torch.cpu",
})

#: attributes that must not exist: sglang probes them with hasattr() to pick a platform
ABSENT = {"torch": frozenset({"npu", "hpu", "xpu", "mps", "musa"}),
          "torch.version": frozenset({"musa", "xpu"})}

GPU_NAME = "NVIDIA H100 80GB HBM3"
GPU_MEMORY = 80 * 2**30
GPU_COUNT = 8

DTYPES = ("float16", "bfloat16", "float32", "float64", "half", "float", "double", "int8",
          "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool", "long",
          "int", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
          "float4_e2m1fn_x2", "float8_e8m0fnu", "complex64")


class _Meta(abc.ABCMeta):
    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return Placeholder(f"{cls.__name__}.{attr}")  # Function.apply, Module.register_...


class Base(metaclass=_Meta):
    """What a class deriving from a placeholder (``class X(nn.Module)``) derives from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __init_subclass__(cls, **kwargs: Any) -> None:
        pass

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return Placeholder(f"{type(self).__name__}().{attr}")


_BASES: dict[str, type] = {}


class Placeholder:
    """Any attribute of a stand-in module: inert under every use sglang makes of it at import
    and resolution time. Falsy, so no optional feature looks present."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Placeholder:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return Placeholder(f"{self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]  # used as a decorator
        return Placeholder(f"{self._name}()")

    def __getitem__(self, key: Any) -> Placeholder:
        return Placeholder(f"{self._name}[]")

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type]:
        cls = _BASES.get(self._name)
        if cls is None:
            cls = _BASES[self._name] = type(self._name.rsplit(".", 1)[-1], (Base,), {})
        return (cls,)

    def __iter__(self) -> Any:
        return iter(())

    def __bool__(self) -> bool:
        return False

    def __len__(self) -> int:
        return 0

    def __int__(self) -> int:
        return 0

    __index__ = __int__

    def __float__(self) -> float:
        return 0.0

    def __enter__(self) -> Placeholder:
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False

    def _same(self, *other: Any) -> Placeholder:
        return self

    __or__ = __ror__ = __and__ = __rand__ = __add__ = __radd__ = __sub__ = __rsub__ = _same
    __mul__ = __rmul__ = __truediv__ = __rtruediv__ = __floordiv__ = __mod__ = __pow__ = _same
    __neg__ = _same

    def _never(self, other: Any) -> bool:
        return False

    __lt__ = __le__ = __gt__ = __ge__ = _never

    def __repr__(self) -> str:
        return f"<stand-in {self._name}>"


class Module(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        if attr in ABSENT.get(self.__name__, ()):
            raise AttributeError(attr)
        if f"{self.__name__}.{attr}" in SUBMODULES:
            return importlib.import_module(f"{self.__name__}.{attr}")
        value = Placeholder(f"{self.__name__}.{attr}")
        setattr(self, attr, value)
        return value


class dtype:  # noqa: N801 - torch's name
    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def itemsize(self) -> int:
        bits = re.findall(r"\d+", self.name)
        return int(bits[0]) // 8 if bits else 1

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class device:  # noqa: N801 - torch's name
    def __init__(self, kind: Any = "cuda", index: int | None = None) -> None:
        kind = getattr(kind, "type", kind)
        if isinstance(kind, str) and ":" in kind:
            kind, _, idx = kind.partition(":")
            index = int(idx)
        self.type = kind
        self.index = index

    def __repr__(self) -> str:
        return f"device(type={self.type!r}, index={self.index!r})"


class finfo:  # noqa: N801 - torch's name
    def __init__(self, *args: Any) -> None:
        self.max = 448.0
        self.min = -448.0
        self.eps = 1e-3
        self.bits = 8


class DeviceProperties:
    name = GPU_NAME
    total_memory = GPU_MEMORY
    major = 9
    minor = 0
    multi_processor_count = 132


class Library(Base):
    def __init__(self, ns: str, kind: str = "DEF", *args: Any) -> None:
        self.m = types.SimpleNamespace(name=ns)

    def __getattr__(self, attr: str) -> Placeholder:
        return Placeholder(f"Library.{attr}")


def _fill(m: types.ModuleType) -> None:
    name = m.__name__
    if name in VERSIONS:
        m.__version__ = VERSIONS[name]
    if name == "torch":
        m.dtype = dtype
        for n in DTYPES:
            setattr(m, n, dtype(n))
        m.device = device
        m.finfo = m.iinfo = finfo
        m.Tensor = type("Tensor", (Base,), {})
        m.Size = tuple
    elif name == "torch.version":
        m.cuda = "12.8"
        m.hip = None
        m.__version__ = VERSIONS["torch"]
    elif name == "torch.cuda":
        m.is_available = lambda: True
        m.device_count = lambda: GPU_COUNT
        m.get_device_name = lambda *a: GPU_NAME
        m.get_device_capability = lambda *a: (9, 0)
        m.get_device_properties = lambda *a: DeviceProperties()
        m.mem_get_info = lambda *a: (GPU_MEMORY - 2**30, GPU_MEMORY)
    elif name == "torch.library":
        m.Library = Library


class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.split(".")[0] in ROOTS:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        m = Module(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module: types.ModuleType) -> None:
        _fill(module)


def install() -> None:
    """Put the stand-ins ahead of every real package of those names."""
    for name in list(sys.modules):
        if name.split(".")[0] in ROOTS:
            raise RuntimeError(f"{name} was imported before the stand-ins were installed")
    sys.meta_path.insert(0, Finder())
