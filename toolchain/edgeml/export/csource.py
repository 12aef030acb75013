"""Writing C source text from bundle values: literals, comments, arrays and integer types, nothing injected.

Both firmware forms (:mod:`edgeml.export.tflite.firmware` for TensorFlow Lite
Micro, :mod:`edgeml.export.c` for plain C) write what a bundle holds (names,
category codes, classes, numbers) into C files. Nothing enters the sources as
it is: text becomes C string literals of escaped bytes (:func:`c_string`),
text in comments is cut to a whitelist (:func:`c_comment`: no ``*/``, ``/*``,
``??`` trigraphs, newlines or non-ASCII), and numbers are formatted from
``int``/``float`` values: every float as a C99 hexadecimal literal of its
exact float32 value (:func:`c_float`), every integer checked against the C
type it is stored in (:func:`c_array`). A bundle called ``x */ int evil; /*``
gets a comment, not a declaration.

>>> print(c_array("uint8_t", "edgeml_take", [0, 3, 255], internal=True))
static const uint8_t edgeml_take[3] = {
    0, 3, 255
};
>>> smallest_unsigned(255), smallest_unsigned(256), smallest_signed(-129, 5)
('uint8_t', 'uint16_t', 'int16_t')
"""

from __future__ import annotations

import numpy as np

#: What :func:`c_comment` keeps as it is: printable ASCII but the backslash (the rest is written as <U+XXXX>).
_COMMENT_SAFE = frozenset(chr(c) for c in range(32, 127)) - {"\\"}
#: C integer types, smallest first, with their ranges and sizes in bytes.
INT_TYPES = {
    "uint8_t": (0, 2 ** 8 - 1, 1), "uint16_t": (0, 2 ** 16 - 1, 2), "uint32_t": (0, 2 ** 32 - 1, 4),
    "int8_t": (-2 ** 7, 2 ** 7 - 1, 1), "int16_t": (-2 ** 15, 2 ** 15 - 1, 2), "int32_t": (-2 ** 31, 2 ** 31 - 1, 4),
}


def c_float(v: float) -> str:
    """``v`` as an exact float32 C99 literal (hexadecimal), NAN and INFINITY by name.

    >>> c_float(0.1), c_float(-2.0), c_float(float("nan")), c_float(0.0)
    ('0x1.99999ap-4f', '-0x1.p+1f', 'NAN', '0x0.p+0f')
    """
    v = float(np.float32(v))
    if np.isnan(v):
        return "NAN"
    if np.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    mantissa, exponent = v.hex().split("p")
    return f"{mantissa.rstrip('0')}p{exponent}f"


def c_string(text: str) -> str:
    r"""``text`` as a C string literal: its UTF-8 bytes, printable ASCII as is, the rest as octal escapes.

    >>> print(c_string('a"b?c'), c_string("°C"))
    "a\"b\?c" "\302\260C"
    """
    out = []
    for b in text.encode("utf-8"):
        ch = chr(b)
        if ch in '"\\?':
            out.append("\\" + ch)  # ? too: "??/" would be a trigraph under -std=c99
        elif 32 <= b < 127:
            out.append(ch)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def c_comment(text) -> str:
    """``text`` made safe inside a C ``/* ... */`` comment: printable ASCII, the rest as ``<U+XXXX>``.

    ``*/`` and ``/*`` get a space between their characters (one would end the
    comment, the other warns), and so does ``??`` (a trigraph under
    ``-std=c99``: ``??/`` is a backslash).

    >>> print(c_comment("x */ int evil; /* ??/ é\\\\ \\n"))
    x * / int evil; / * ? ?/ <U+00E9><U+005C> <U+000A>
    """
    out: list[str] = []
    for ch in str(text):
        if ch not in _COMMENT_SAFE:
            out.append(f"<U+{ord(ch):04X}>")
            continue
        if out and out[-1][-1:] + ch in ("*/", "/*", "??"):
            out.append(" ")
        out.append(ch)
    return "".join(out)


def c_array(ctype: str, name: str, values, per_line: int = 8, *, internal: bool = False) -> str:
    """A C array definition (``const ctype name[] = {...};``), ``static`` when ``internal``.

    ``values`` are C literals (strings), or integers when ``ctype`` is one of
    :data:`INT_TYPES` (each checked to fit).
    """
    items = [_int_literal(ctype, name, v) if ctype in INT_TYPES and not isinstance(v, str) else v for v in values]
    rows = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    storage = "static " if internal else ""
    return f"{storage}const {ctype} {name}[{len(items)}] = {{\n    " + ",\n    ".join(rows) + "\n};"


def _int_literal(ctype: str, name: str, v) -> str:
    lo, hi, _ = INT_TYPES[ctype]
    value = int(v)
    if value != v or not lo <= value <= hi:
        raise ValueError(f"{name}: {v!r} does not fit {ctype}")
    return str(value)


def smallest_unsigned(largest: int) -> str:
    """The smallest unsigned C type that holds every value in ``[0, largest]``."""
    return next(t for t in ("uint8_t", "uint16_t", "uint32_t") if int(largest) <= INT_TYPES[t][1])


def smallest_signed(lowest: int, largest: int) -> str:
    """The smallest signed C type that holds every value in ``[lowest, largest]``."""
    return next(t for t in ("int8_t", "int16_t", "int32_t")
                if INT_TYPES[t][0] <= int(lowest) and int(largest) <= INT_TYPES[t][1])


def type_bytes(ctype: str) -> int:
    """``sizeof(ctype)`` for the integer types and ``float``."""
    return 4 if ctype == "float" else INT_TYPES[ctype][2]


def label_rule(threshold: tuple[str, str] | None = None) -> tuple[list[str], list[str]]:
    """``edgeml_label`` (probabilities -> a class index): the header's lines and the source's.

    ``threshold`` is ``(define, test)``: the ``#define EDGEML_THRESHOLD`` line and the C expression that
    chooses class 1 (a binary decision threshold); without it the first most likely class (argmax), as
    ``edgeml_runtime`` labels.
    """
    if threshold is not None:
        head, rule = [threshold[0]], [f"    return {threshold[1]} ? 1 : 0;"]
    else:
        head = ["/* edgeml_label: the first most likely class (argmax), as edgeml_runtime labels. */"]
        rule = ["    int best = 0;", "    for (int k = 1; k < EDGEML_N_OUTPUTS; k++) {",
                "        if (p[k] > p[best]) best = k;", "    }", "    return best;"]
    head.append("int edgeml_label(const float *p);  /* p: EDGEML_N_OUTPUTS probabilities -> an edgeml_classes index */")
    return head, ["", "int edgeml_label(const float *p) {", *rule, "}"]


#: The lines every generated source file starts with after its includes: the float arithmetic the build verified
#: is exact only without fast-math and without fused multiply-adds.
STRICT_FLOAT = [
    "/* C99 (hexadecimal float constants). The arithmetic here is what the build verified only without",
    "   fast-math and without fused multiply-adds: */",
    "#ifdef __FAST_MATH__",
    '#error "compile edgeml_model.c without -ffast-math / -Ofast: the model needs NaN and exact rounding"',
    "#endif",
    "#if defined(__clang__)",
    "#pragma STDC FP_CONTRACT OFF",
    "#elif defined(__GNUC__)",
    '#pragma GCC optimize("fp-contract=off")',
    "#endif",
]

__all__ = ["INT_TYPES", "STRICT_FLOAT", "c_array", "c_comment", "c_float", "c_string", "label_rule",
           "smallest_signed", "smallest_unsigned", "type_bytes"]
