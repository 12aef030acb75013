"""Linear models and MLPs as TFLite fully connected layers: float (fp32, fp16 weights) and full-integer int8.

:func:`read_dense` turns a fitted scikit-learn linear model or MLP into
:class:`Dense` layers and an output head; :func:`emit_dense` writes them
with float weights, :func:`emit_dense_int8` with int8 weights and
activations. Full-integer int8 takes the *encoded* inputs
(:class:`edgeml_runtime.litert.Encoding`): :func:`int8_encoding` scales each
one to [-1, 1] over the calibration rows and :func:`fold_encoding` folds
that into the first layer, so every input gets all 255 levels;
:func:`two_logits` makes a binary head a standard int8 SOFTMAX, and
:func:`centre_output` centres a regression output on its range.

Example (a 2-in, 1-out layer, refolded for inputs scaled to [-1, 1]):

>>> from edgeml_runtime.litert import Encoding
>>> layer = Dense(np.array([[1.0, 2.0]]), np.array([0.5]), "identity")
>>> pre = Encoding([0, 1], np.zeros(2, np.float32), [])
>>> enc = int8_encoding(pre, np.array([[0.0, 10.0], [4.0, 20.0]], np.float32))
>>> [folded] = fold_encoding([layer], pre, enc)
>>> z = enc.apply(np.array([[1.0, 12.0]], np.float32))
>>> round(float((z @ folded.weight.T + folded.bias)[0, 0]), 4)  # 1*1 + 2*12 + 0.5
25.5
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from sklearn.base import is_classifier

from edgeml.errors import ExportError
from edgeml.export.tflite.graph import ACTIVATIONS, Graph, Quant, Tensor
from edgeml.models.families import family_of
from edgeml_runtime.litert import Encoding


@dataclass(frozen=True)
class Dense:
    """One fully connected layer: ``act(x @ weight.T + bias)``, weight [out, in]."""

    weight: np.ndarray
    bias: np.ndarray
    act: str  # "identity", "relu", "tanh", "logistic"


def read_dense(est, task: str) -> tuple[list[Dense], str]:
    """Linear models and MLPs as fully connected layers, and the output head (read as the model family says)."""
    family = family_of(est)
    reader = DENSE_READERS.get(family.kind)
    if reader is None:
        raise ExportError(f"{type(est).__name__} ({family.title}) is not a linear model or an MLP; "
                          "the TFLite exporter writes it another way")
    return reader(est, task)


def _read_mlp(est, task: str) -> tuple[list[Dense], str]:
    act = {"relu": "relu", "tanh": "tanh", "logistic": "logistic", "identity": "identity"}[est.activation]
    layers = [Dense(w.T.astype(np.float32), b.astype(np.float32), act)
              for w, b in zip(est.coefs_, est.intercepts_, strict=False)]
    layers[-1] = Dense(layers[-1].weight, layers[-1].bias, "identity")
    head = {"logistic": "sigmoid2", "softmax": "softmax", "identity": "identity"}[est.out_activation_]
    return layers, head


def _read_linear(est, task: str) -> tuple[list[Dense], str]:
    coef = np.atleast_2d(np.asarray(est.coef_, np.float64))
    bias = np.atleast_1d(np.asarray(est.intercept_, np.float64))
    if task == "classification":
        # The linear family's one classifier is LogisticRegression: its probabilities are the sigmoid / softmax of
        # the linear scores. A regressor has none.
        if not is_classifier(est):
            raise ExportError(f"{type(est).__name__} is a regressor: it has no class probabilities the TFLite "
                              "exporter can compute; use LogisticRegression for classification")
        if len(est.classes_) > 2 and (getattr(est, "multi_class", "auto") == "ovr" or est.solver == "liblinear"):
            raise ExportError("one-vs-rest multiclass LogisticRegression is not supported by the TFLite exporter; "
                              "use a multinomial solver (lbfgs, saga)")
        head = "sigmoid2" if coef.shape[0] == 1 else "softmax"
    else:
        head = "identity"
    return [Dense(coef.astype(np.float32), bias.astype(np.float32), "identity")], head


#: Family kind -> how a fitted model of that kind becomes layers.
DENSE_READERS = {"mlp": _read_mlp, "linear": _read_linear}


def emit_dense(g: Graph, z: Tensor, layers: list[Dense], weights) -> Tensor:
    for i, layer in enumerate(layers):
        fused = {"relu": "RELU", "tanh": "TANH"}.get(layer.act, "NONE")
        out = layer.weight.shape[0]
        z = g.op("FULLY_CONNECTED",
                 [z, weights(f"dense{i}_weight", layer.weight), weights(f"dense{i}_bias", layer.bias)],
                 (out,), name=f"dense{i}", FusedActivationFunction=ACTIVATIONS[fused])
        if layer.act == "logistic":
            z = g.op("LOGISTIC", [z], (out,), name=f"dense{i}_logistic")
    return z


#: The int8 input grid: every encoded input is scaled to [-1, 1], so q = round(127 * z).
INPUT_QUANT = Quant(np.array([1 / 127]), np.zeros(1))
#: What TFLite's int8 kernels require of SOFTMAX and LOGISTIC outputs, and of TANH's.
PROBABILITY_QUANT = Quant(np.array([1 / 256]), np.array([-128]))
TANH_QUANT = Quant(np.array([1 / 128]), np.zeros(1))


def _affine(lo: float, hi: float) -> Quant:
    """int8 scale and zero point covering [lo, hi] (widened to include 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-8) / 255.0
    zero = int(np.clip(round(-128 - lo / scale), -128, 127))
    return Quant(np.array([scale]), np.array([zero]))


def int8_encoding(pre: Encoding, X: np.ndarray) -> Encoding:
    """``pre`` rescaled so that each encoded input spans [-1, 1] over the calibration rows ``X``."""
    E = replace(pre, mean=None, inv_scale=None).apply(X).astype(np.float64)
    lo, hi = E.min(axis=0), E.max(axis=0)
    half = (hi - lo) / 2
    half[half <= 0] = 1.0
    return replace(pre, mean=((lo + hi) / 2).astype(np.float32), inv_scale=(1 / half).astype(np.float32))


def fold_encoding(layers: list[Dense], pre: Encoding, enc: Encoding) -> list[Dense]:
    """The layers rewritten for inputs encoded by ``enc`` instead of ``pre`` (same outputs, in float64)."""
    mean = pre.mean.astype(np.float64) if pre.mean is not None else 0.0
    inv = pre.inv_scale.astype(np.float64) if pre.inv_scale is not None else 1.0
    ratio = inv / enc.inv_scale.astype(np.float64)          # z = z' * ratio + shift
    shift = (enc.mean.astype(np.float64) - mean) * inv
    first = layers[0]
    w = first.weight.astype(np.float64)
    return [Dense(w * ratio, first.bias + w @ shift, first.act), *layers[1:]]


def two_logits(layers: list[Dense]) -> list[Dense]:
    """A one-logit binary head as two logits [0, z]: softmax of them is [1 - sigmoid(z), sigmoid(z)] exactly."""
    last = layers[-1]
    w = np.vstack([np.zeros_like(last.weight), last.weight])
    return [*layers[:-1], Dense(w, np.concatenate([[0.0], last.bias]), last.act)]


def _activate(act: str, x: np.ndarray) -> np.ndarray:
    return {"relu": lambda: np.maximum(x, 0), "tanh": lambda: np.tanh(x), "logistic": lambda: 1 / (1 + np.exp(-x)),
            "identity": lambda: x}[act]()


def centre_output(layers: list[Dense], Z: np.ndarray) -> tuple[list[Dense], float]:
    """The layers with the calibrated output range centred on 0, and the offset to add back.

    An int8 tensor's range must include 0, so a value far from 0 (a power plant's
    output around 450 MW) would get steps of max|y|/255 instead of (max - min)/255;
    centring gives the output all 255 steps over the range it takes.
    """
    a = Z.astype(np.float64)
    for layer in layers:
        a = _activate(layer.act, a @ layer.weight.astype(np.float64).T + layer.bias)
    offset = float((a.min() + a.max()) / 2)
    last = layers[-1]
    return [*layers[:-1], Dense(last.weight, np.asarray(last.bias, np.float64) - offset, last.act)], offset


def emit_dense_int8(g: Graph, x: Tensor, layers: list[Dense], head: str, Zcal: np.ndarray) -> tuple[Tensor, dict]:
    """int8 fully connected layers (per-tensor symmetric weights, int32 bias), activations calibrated on ``Zcal``.

    ``x`` is the int8 input on :data:`INPUT_QUANT`; ``head`` is ``softmax``
    (int8 probabilities) or ``identity`` (an int8 value calibrated on ``Zcal``).
    """
    a = Zcal.astype(np.float64)
    for i, layer in enumerate(layers):
        w = layer.weight.astype(np.float64)
        s_w = max(float(np.abs(w).max()), 1e-12) / 127.0
        wq = np.clip(np.round(w / s_w), -127, 127).astype(np.int8)
        s_in = float(x.quant.scale[0])
        bq = np.round(layer.bias / (s_in * s_w)).astype(np.int32)
        pre_act = a @ w.T + layer.bias
        post = _activate(layer.act, pre_act)
        fused = "RELU" if layer.act == "relu" else "NONE"
        out_range = post if fused == "RELU" else pre_act
        q_out = _affine(float(out_range.min()), float(out_range.max()))
        out = layer.weight.shape[0]
        wt = g.const(f"dense{i}_weight_int8", wq, quant=Quant(np.array([s_w]), np.zeros(1)))
        bt = g.const(f"dense{i}_bias_int32", bq, quant=Quant(np.array([s_in * s_w]), np.zeros(1)))
        x = g.op("FULLY_CONNECTED", [x, wt, bt], (out,), np.int8, name=f"dense{i}", quant=q_out,
                 FusedActivationFunction=ACTIVATIONS[fused])
        if layer.act == "tanh":
            x = g.op("TANH", [x], (out,), np.int8, name=f"dense{i}_tanh", quant=TANH_QUANT)
        elif layer.act == "logistic":
            x = g.op("LOGISTIC", [x], (out,), np.int8, name=f"dense{i}_logistic", quant=PROBABILITY_QUANT)
        a = post
    if head == "softmax":
        x = g.op("SOFTMAX", [x], x.shape, np.int8, name="probabilities", quant=PROBABILITY_QUANT)
    return x, {"method": "full-integer: int8 input, weights (per-tensor symmetric), activations (min-max) and "
                         "output; int32 biases", "calibration_rows": len(Zcal)}



__all__ = ["DENSE_READERS", "Dense", "INPUT_QUANT", "PROBABILITY_QUANT", "TANH_QUANT", "centre_output", "emit_dense",
           "emit_dense_int8", "fold_encoding", "int8_encoding", "read_dense", "two_logits"]
