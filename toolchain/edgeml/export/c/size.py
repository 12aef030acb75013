"""The flash a model's plain-C form takes, for the search: exact table bytes from the fitted model, plus code.

A target whose profile says ``firmware = "c"`` judges each trial by the C form
``edgeml firmware`` will write (:class:`edgeml.targets.measure.TrialMeasure`),
not by a TFLite file. The formula a benchmark can quote::

    flash = const data + code
    const data = model tables + preprocessing tables + strings      (Program.const_bytes, exact)
      trees:  I·(f + 4 + 2c) + 4·L·V + T·(n + l [+ t]) [+ 4·K bias, unless one value]   (.forest.tables_bytes)
              or with the U distinct leaves shared, where smaller: I·(f + 4 + 2c) + 4·U·V + T·(n [+ t]) [+ bias]
      dense:  4·Σ rows·(inputs + 1) per layer [- 4: one output's bias is a literal] [+ 8·W scaler]
      inputs: W·take + 4·numbers + 4·one-hot inputs
      strings: 4 per name, code and class, + len + 1 per distinct text
    code = CODE_BYTES[family, task] + LIBM_BYTES of each of its own exp and tanh the C calls (edgeml_expf, ...)

:func:`model_c_bytes` counts a fitted model's part from the model alone (the
tree node lists of :func:`~edgeml.export.tflite.trees.read_forest` laid out
by the very :func:`~.forest.forest_tables` the generator uses, shaped as the
ONNX converters shape them; the dense layers of
:func:`~edgeml.export.tflite.dense.read_dense`), and
:func:`preprocessing_c_bytes` the data set's part, once; together they are
the generated C's :meth:`~.program.Program.const_bytes` to the byte (tests
check it per family). The code constants are ``.text`` of ``edgeml_model.o``
built by arm-none-eabi-gcc 12 ``-Os -mcpu=cortex-m7 -mthumb
-mfpu=fpv5-d16 -mfloat-abi=hard`` for the largest of each family's cases in
tests/test_firmware_c.py, and the ``.text`` of the C's own ``edgeml_expf`` and
``edgeml_tanhf`` (no libm, so a board computes the host's bits): within ~100
bytes of any real build.
"""

from __future__ import annotations

import numpy as np

from edgeml.export.c.forest import forest_tables
from edgeml.export.c.program import Program, string_bytes
from edgeml.export.c.steps import Softmax, TwoClass, Unary
from edgeml.export.csource import smallest_unsigned, type_bytes
from edgeml.export.tflite.trees import Forest, Node

#: ``.text`` of the generated C per family and task (the walker or the dense kernel, the preprocessing,
#: edgeml_predict, a classifier's probabilities and edgeml_label), measured as the module docstring says.
CODE_BYTES = {("trees", "classification"): 320, ("trees", "regression"): 180,
              ("linear", "classification"): 300, ("linear", "regression"): 200,
              ("mlp", "classification"): 380, ("mlp", "regression"): 300}
#: ``.text`` of the C's own exponential and tanh (steps.KERNELS), arm-none-eabi-gcc 12 -Os for a Cortex-M7 (-4 B
#: on an M4); tanh calls the exponential, so it adds both.
LIBM_BYTES = {"expf": 280, "tanhf": 56}


def program_code_bytes(program: Program, task: str) -> int:
    """The code constant of ``program`` (a ``task`` model): its family's, plus the libm functions it calls."""
    return CODE_BYTES[program.family, task] + sum(LIBM_BYTES[f] for f in program_libm(program))


def program_libm(program: Program) -> set[str]:
    uses = set()
    for step in program.steps:
        if isinstance(step, Softmax) or (isinstance(step, Unary) and step.function in ("logistic", "exp")) \
                or (isinstance(step, TwoClass) and step.mode == "logistic"):
            uses.add("expf")
        if isinstance(step, Unary) and step.function == "tanh":
            uses |= {"tanhf", "expf"}
    return uses


def model_c_bytes(model, n_features: int, task: str, n_classes: int = 2) -> tuple[int, int]:
    """``(flash, ram)`` of a fitted searched ``model`` in the C form on ``n_features`` model inputs
    (:func:`steps_c_bytes` of its steps)."""
    from edgeml.models.estimators import model_steps

    return steps_c_bytes(model_steps(model), n_features, task, n_classes)


def steps_c_bytes(steps, n_features: int, task: str, n_classes: int = 2) -> tuple[int, int]:
    """``(flash, ram)`` of a model's fitted ``steps`` (an optional scaler, then the estimator) in the C form: its
    const tables plus the code constant, and (about) the float buffers of one row."""
    from edgeml.export.inverse import split
    from edgeml.models.families import family_of

    est, inverse = split(steps[-1][1])
    family = family_of(est)
    scaler = 8 * n_features if len(steps) > 1 else 0
    libm = {"expf"} if inverse is not None else set()
    if family.kind == "trees":
        tables, widths, more = _trees(est, task)
    else:
        tables, widths, more = _dense(est, task, n_classes)
    libm |= more
    flash = scaler + tables + CODE_BYTES[family.kind, task] + sum(LIBM_BYTES[f] for f in libm)
    return flash, 4 * (n_features + sum(widths))


def _trees(est, task: str) -> tuple[int, list[int], set[str]]:
    from edgeml.export.tflite.trees import read_forest

    forest = onnx_shaped(read_forest(est, task), task)
    tables = forest_tables(forest)
    bias = 4 * forest.k if any(forest.bias) and len(set(forest.bias)) > 1 else 0  # one value is a literal
    if task != "classification":
        return tables.nbytes + bias, [forest.k], set()
    if forest.k == 1:  # binary: one score, then two probabilities (the logistic function for boosting)
        return tables.nbytes + bias, [1, 2], {"expf"} if forest.head == "sigmoid2" else set()
    softmax = forest.head == "softmax"
    return tables.nbytes + bias, [forest.k] * (2 if softmax else 1), {"expf"} if softmax else set()


def onnx_shaped(forest: Forest, task: str) -> Forest:
    """``forest`` shaped as the ONNX converters write it: a binary random forest keeps one score (the positive
    class's share), and the bias boosting's converters put into the leaves stays out of the tables."""
    if task == "classification" and forest.k == 2 and forest.head == "none":
        trees = tuple(tuple(n if n.feature >= 0 else Node(value=(n.value[1],)) for n in nodes)
                      for nodes in forest.trees)
        return Forest(trees, 1, (0.0,), forest.compare, forest.head)
    return forest


def _dense(est, task: str, n_classes: int) -> tuple[int, list[int], set[str]]:
    from edgeml.export.tflite.dense import read_dense

    layers, head = read_dense(est, task)
    tables = sum(4 * layer.weight.shape[0] * (layer.weight.shape[1] + 1) for layer in layers)
    if layers[-1].weight.shape[0] == 1:
        tables -= 4  # one output: its bias is a literal, not a table
    widths = [layer.weight.shape[0] for layer in layers]
    acts = {layer.act for layer in layers}
    libm = {"expf"} if head in ("sigmoid2", "softmax") or "logistic" in acts else set()
    if "tanh" in acts:
        libm.add("tanhf")
    if head == "sigmoid2":
        widths += [1, 1, 2] if len(layers) > 1 else [2]  # an MLP: Sigmoid, 1 - p, Concat; a linear model: one step
    elif head == "softmax":
        widths.append(n_classes)
    return tables, widths, libm


def preprocessing_c_bytes(preprocessor, schema, classes=(), pointer_bytes: int = 4) -> int:
    """The const data the data set adds to any model's C: the preprocessing tables (without a model's scaler)
    and the strings of feature names, category codes and ``classes``."""
    from sklearn.pipeline import Pipeline

    from edgeml.export.tflite.pipeline import read_preprocess

    enc = read_preprocess(Pipeline([("pre", preprocessor), ("model", "passthrough")]), schema)
    take = type_bytes(smallest_unsigned(max(len(schema.features) - 1, 0))) * enc.width
    names = [*schema.features, *(v for c in schema.columns if c.kind == "categorical" for v in c.categories),
             *(str(c) for c in classes)]
    strings = string_bytes(names, pointer_bytes)
    return take + 4 * len(enc.numeric) + 4 * len(enc.onehot) + strings


def c_ram_bytes(program: Program) -> int:
    """The float buffers of one row in ``edgeml_predict`` (on the stack): the C form's RAM, besides the caller's."""
    return 4 * int(np.sum(program.widths()))


__all__ = ["CODE_BYTES", "LIBM_BYTES", "c_ram_bytes", "model_c_bytes", "onnx_shaped", "preprocessing_c_bytes",
           "program_code_bytes", "program_libm", "steps_c_bytes"]
