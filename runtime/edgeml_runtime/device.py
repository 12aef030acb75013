"""What this device can run well, and so which artifact of a bundle to use.

A bundle may hold several artifacts of one model (fp32 ONNX, ``.ort``, fp16
for GPUs, int8, TFLite). The runtime picks, in order: an explicit choice;
then the interpreters in the order of the target profile's formats (a
TFLite file in an ONNX-first bundle is for devices without onnxruntime; a
TFLite-first bundle's ``model.onnx`` is only the build's reference), and for
one interpreter fp16 only where onnxruntime has a CUDA or TensorRT
provider, int8 first where the CPU has int8 dot-product instructions
(AVX-512 VNNI, AVX-VNNI, Arm dotprod), since elsewhere int8 is slower than
fp32; otherwise the manifest's order.

Example:

>>> from edgeml_runtime.manifest import Artifact
>>> arts = [Artifact("model.onnx", "onnx", "fp32", 1, "x"), Artifact("model.int8.onnx", "onnx", "int8", 1, "y"),
...         Artifact("model.fp16.onnx", "onnx", "fp16", 1, "z")]
>>> [a.path for a in rank(arts, Capabilities(providers=("CPUExecutionProvider",), int8_dot=True))]
['model.int8.onnx', 'model.onnx']
>>> [a.path for a in rank(arts, Capabilities(providers=("CUDAExecutionProvider", "CPUExecutionProvider")))]
['model.fp16.onnx', 'model.onnx', 'model.int8.onnx']
>>> arts.append(Artifact("model.int8.tflite", "tflite", "int8", 1, "t"))
>>> [a.path for a in rank(arts, Capabilities(int8_dot=True))][-1]
'model.int8.tflite'
>>> [a.path for a in rank(arts, Capabilities(int8_dot=True), formats=("tflite",))][0]
'model.int8.tflite'
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from .bundle import Artifact
from .errors import EngineError

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
#: Which interpreter runs each format: formats of one interpreter compete on precision, interpreters by order.
ENGINE_OF = {"onnx": "onnxruntime", "ort": "onnxruntime", "tflite": "litert"}
#: /proc/cpuinfo flags of CPUs with int8 dot-product instructions.
INT8_FLAGS = {"avx512_vnni", "avx_vnni", "asimddp"}


@dataclass(frozen=True)
class Capabilities:
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    int8_dot: bool = False

    @property
    def gpu(self) -> tuple[str, ...]:
        return tuple(p for p in GPU_PROVIDERS if p in self.providers)


@cache
def detect() -> Capabilities:
    """This device's onnxruntime providers and CPU features (read once)."""
    try:
        import onnxruntime as ort

        providers = tuple(ort.get_available_providers())
    except ImportError:
        providers = ()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    return Capabilities(providers, bool(flags & INT8_FLAGS))


def rank(artifacts, caps: Capabilities, precision: str | None = None, formats=()) -> list[Artifact]:
    """The artifacts worth trying here, best first (see the module docstring).

    ``formats`` is the target profile's order of preference; by default the artifacts' order.
    """
    if precision is not None:
        chosen = [a for a in artifacts if a.precision == precision]
        if not chosen:
            have = ", ".join(sorted({a.precision for a in artifacts}))
            raise EngineError(f"the bundle has no {precision} artifact; it has {have}")
        return chosen

    engines = list(dict.fromkeys(ENGINE_OF.get(f, f) for f in (*formats, *(a.format for a in artifacts))))

    def order(item):
        i, a = item
        if a.precision == "fp16":
            speed = 0
        elif a.precision == "int8":
            speed = 0 if caps.int8_dot else 2
        else:
            speed = 1
        return (engines.index(ENGINE_OF.get(a.format, a.format)), speed, i)

    usable = [(i, a) for i, a in enumerate(artifacts) if a.precision != "fp16" or caps.gpu]
    return [a for _, a in sorted(usable, key=order)]


def providers_for(artifact: Artifact, caps: Capabilities) -> list[str]:
    """The execution providers to run ``artifact`` with: the GPU first for fp16, the CPU always last."""
    if artifact.precision == "fp16" and caps.gpu:
        return [*caps.gpu, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
