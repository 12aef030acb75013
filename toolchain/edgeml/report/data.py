"""``report.json``: the numbers behind the build report, from the manifest and the test split's predictions.

Everything the page draws is here, so that ``edgeml report BUNDLE`` draws it
again from the bundle alone: the test metrics beside the baseline, the
confusion matrix and the ROC and precision-recall curves with the decision
threshold on them (classification; one-vs-rest per class for more than two, with the point the most
probable class decides at) or predicted against true values
(regression), the permutation importance of each input on the test split, the
search's trials with the frontier and the chosen model, the drift reference,
and the artifacts with their parity and what was not shipped. Numbers are
rounded to six significant digits; nothing holds a time, so the same build
gives the same bytes.
"""

from __future__ import annotations

import json

import numpy as np

from edgeml.verify.baseline import RegressionReport, SplitReport

#: report.json's layout; ``edgeml report`` refuses another.
FORMAT = 1
#: At most this many points on a curve, and this many test rows in a scatter.
CURVE_POINTS, SCATTER_ROWS = 200, 400
#: A table of more classes draws the one-vs-rest curves of this many, the most frequent.
MAX_CLASS_CURVES = 8


def report_data(manifest: dict, split: SplitReport | RegressionReport, y_test: np.ndarray, output: np.ndarray,
                importance: dict[str, float], firmware: dict | None = None) -> dict:
    """The report of a bundle whose finished ``manifest`` (as JSON, without its ``report``) this is; ``output`` is
    the host pipeline's on the test rows ``y_test`` (probabilities, or values), ``importance`` the drop of the
    test metric when each input is shuffled; ``firmware`` the plain-C form's flash and RAM (or why it cannot be
    written) on a target whose firmware form it is."""
    m = manifest
    out = {
        "format": FORMAT,
        "bundle": {k: m[k] for k in ("name", "version", "task", "label")} | {"target": m["target"]["name"],
                                                                               "classes": m["classes"]},
        "rows": m["provenance"]["data"]["split"],
        "metrics": {"test": m["metrics"]["test"], "valid": m["metrics"]["valid"], **_baseline(split, y_test)},
        "decision": m.get("decision"),
        "importance": {"metric": importance_metric(m["task"], len(m["classes"] or ())),
                       "inputs": [{"name": k, "drop": _r(v)} for k, v in
                                  sorted(importance.items(), key=lambda kv: (-kv[1], kv[0]))]},
        "frontier": frontier(m["search"]),
        "reference": reference(m["reference"]),
        "artifacts": artifacts(m),
        "not_shipped": [{k: n[k] for k in ("format", "precision", "reason")} for n in m["not_shipped"]],
        "firmware": firmware,
    }
    if m["task"] == "classification":
        out["confusion"] = None if split.confusion is None else [list(r) for r in split.confusion]
        if len(m["classes"]) == 2:
            threshold = m["decision"]["threshold"] if m.get("decision") else 0.5
            out["curves"] = curves(np.asarray(y_test), np.asarray(output)[:, 1], threshold)
        else:
            out["per_class"] = per_class_curves(np.asarray(y_test), np.asarray(output), m["classes"])
    else:
        out["values"] = scatter(np.asarray(y_test, dtype=np.float64), np.asarray(output, dtype=np.float64))
    return _plain(out)


def _baseline(split: SplitReport | RegressionReport, y_test: np.ndarray) -> dict:
    if isinstance(split, RegressionReport):
        rmse = float(np.sqrt(np.mean((np.asarray(y_test, dtype=np.float64) - split.median) ** 2)))
        return {"baseline": {"rmse": _r(rmse), **split.baseline},
                "baseline_name": f"median of the training labels ({split.median:.6g})"}
    return {"baseline": split.baseline, "baseline_name": f"majority class {split.majority!r}"}


def importance_metric(task: str, classes: int) -> str:
    """The test metric the importance is a drop of: ROC AUC (binary), accuracy (more classes), R² (regression)."""
    return "r2" if task == "regression" else ("roc_auc" if classes == 2 else "accuracy")


def curves(y: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """ROC and precision-recall points of the rule "class 1 when ``score`` is above t", over the t of the data
    (at most :data:`CURVE_POINTS`), and the point at ``threshold``."""
    cuts = np.unique(score)
    if len(cuts) > CURVE_POINTS:
        cuts = cuts[np.linspace(0, len(cuts) - 1, CURVE_POINTS).round().astype(int)]
    cuts = np.concatenate([[-np.inf], cuts])
    rates = [_rates(y, score, t) for t in cuts]
    at = _rates(y, score, threshold)
    return {"threshold": threshold,
            "roc": [[fpr, tpr] for fpr, tpr, _, _ in rates] + [[0.0, 0.0]],
            "pr": [[rec, pre] for _, _, rec, pre in rates if pre is not None],
            "at_threshold": {"fpr": at[0], "tpr": at[1], "recall": at[2], "precision": at[3]},
            "positives": int(np.sum(y == 1)), "rows": len(y)}


def per_class_curves(y: np.ndarray, probabilities: np.ndarray, classes) -> list[dict]:
    """One-vs-rest ROC and precision-recall points of each class (at most :data:`MAX_CLASS_CURVES`, the most
    frequent), with the point the decision (the most probable class) is at: its rates of "predicted this class"."""
    said = probabilities.argmax(axis=1)
    order = sorted(range(len(classes)), key=lambda i: (-int(np.sum(y == i)), i))[:MAX_CLASS_CURVES]
    out = []
    for i in sorted(order):
        mine = (y == i).astype(int)
        c = curves(mine, probabilities[:, i], np.inf)
        fpr, tpr, recall, precision = _rates(mine, (said == i).astype(float), 0.5)  # "said this class"
        at = {"fpr": fpr, "tpr": tpr, "recall": recall, "precision": precision}
        out.append({"class": str(classes[i]), "roc": c["roc"], "pr": c["pr"], "at_decision": at,
                    "positives": c["positives"], "rows": c["rows"]})
    return out


def _rates(y: np.ndarray, score: np.ndarray, t: float) -> tuple:
    said = score > t
    tp, fp = int(np.sum(said & (y == 1))), int(np.sum(said & (y != 1)))
    pos, neg = max(int(np.sum(y == 1)), 1), max(int(np.sum(y != 1)), 1)
    precision = _r(tp / (tp + fp)) if tp + fp else None
    return _r(fp / neg), _r(tp / pos), _r(tp / pos), precision


def scatter(y: np.ndarray, predicted: np.ndarray) -> dict:
    """Predicted against true values of at most :data:`SCATTER_ROWS` test rows, evenly spread over the split."""
    keep = np.unique(np.linspace(0, len(y) - 1, min(len(y), SCATTER_ROWS)).round().astype(int)) if len(y) else []
    return {"true": [_r(v) for v in y[keep]], "predicted": [_r(v) for v in predicted[keep]], "rows": len(y)}


def frontier(search: dict) -> dict:
    """Every trial's size, predicted latency and validation loss; which are on the frontier and which was chosen."""
    on = set(search["frontier"])
    chosen = next((t["iteration"] for t in search["trial_log"] if t["learner"] == search["best_learner"]
                   and t["config"] == search["best_config"]), None)
    trials = [{"iteration": t["iteration"], "learner": t["learner"], "loss": _r(t["loss"]),
               "model_bytes": t.get("model_bytes"), "latency_ms": _r(t.get("latency_ms")),
               "feasible": t.get("feasible", True), "frontier": t["iteration"] in on}
              for t in search["trial_log"] if t.get("loss") is not None and abs(t["loss"]) < float("inf")]
    budgets = search["budgets"]
    return {"metric": search["metric"], "chosen": chosen, "trials": trials,
            "budgets": {"max_model_bytes": budgets.get("max_model_bytes"),
                        "latency_budget_ms": budgets.get("latency_budget_ms")}}


def reference(ref: dict) -> list[dict]:
    """Each input's reference histogram: bin labels and the share of training rows in each."""
    out = []
    for name, c in ref["columns"].items():
        entry = {"name": name, "kind": c["kind"], "monitored": c["monitored"]}
        if not c["monitored"]:
            out.append(entry | {"reason": c.get("reason", "")})
            continue
        if c["kind"] == "numeric":
            e = c["edges"]
            labels = ([f"≤ {e[0]:.4g}"] + [f"{a:.4g}–{b:.4g}" for a, b in zip(e, e[1:], strict=False)]
                      + [f"> {e[-1]:.4g}"]) if e else ["all"]
        elif c["kind"] == "boolean":
            labels = ["false", "true"]
        else:
            labels = [str(v) for v in c["categories"]] + ["(other)"]
        out.append(entry | {"bins": labels, "shares": [_r(s) for s in c["shares"]],
                            "missing_rate": _r(c.get("missing_rate", 0.0))})
    return out


def artifacts(m: dict) -> list[dict]:
    """Every shipped artifact with its format, precision, size, hash, test metrics and parity record."""
    parity = {v["artifact"]: v for v in m["verification"]}
    out = []
    for a in m["artifacts"]:
        v = parity.get(a["path"], {})
        out.append({"path": a["path"], "format": a["format"], "precision": a["precision"], "bytes": a["bytes"],
                    "sha256": a["sha256"], "engine": a["engine"], "test_metrics": a.get("test_metrics"),
                    "metric_drop": a.get("metric_drop"),
                    "parity": {k: v.get(k) for k in ("rows", "label_mismatches", "max_abs_diff", "passed")}
                    | {"tolerance": v.get("tolerance")}})
    return out


def _r(v):
    return None if v is None else float(f"{float(v):.6g}")


def _plain(value):
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def to_bytes(data: dict) -> bytes:
    """report.json as written: keys in the order made, two-space indent, a final newline."""
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


__all__ = ["FORMAT", "report_data", "to_bytes"]
