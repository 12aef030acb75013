"""``report.html``: the build report drawn from ``report.json`` (:mod:`edgeml.report.data`), one self-contained page.

Inline CSS and SVG only (:mod:`edgeml.report.svg`): no script, no font, no
image or style sheet to fetch, so the page opens offline and the same
``report.json`` always gives the same bytes. Numbers a test or a person may
want to check carry ``data-`` attributes (``data-metric``, ``data-artifact``…).
"""

from __future__ import annotations

from edgeml.report.svg import Plot, Scale, bars, esc, heatmap, num

CSS = """
:root{--ink:#1f2933;--mute:#61707f;--line:#d9dee4;--bg:#f6f7f9;--card:#fff;--a:#2563eb;--b:#d97706;--ok:#15803d;
--bad:#b91c1c}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--ink);background:var(--bg)}main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:0 0 12px}.sub{color:var(--mute);margin:0 0 20px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 18px;margin:0 0 16px}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}.fig{margin:0;display:table}
.fig figcaption{display:table-caption;caption-side:bottom;color:var(--mute);
font-size:12px;max-width:420px;margin-top:4px}table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:5px 12px 5px 0;text-align:left;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--mute);font-weight:600;font-size:12px}td.n,th.n{text-align:right;white-space:nowrap}code{font-size:12px}
.pass{color:var(--ok);font-weight:600}.fail{color:var(--bad);font-weight:600}.note{color:var(--mute)}
.grid3{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:10px 18px}
.plot text{font-size:11px;fill:var(--ink)}.plot .tick{fill:var(--mute)}.plot .label{fill:var(--mute);font-size:12px}
.plot .frame{fill:none;stroke:var(--line)}.plot .grid{stroke:#eef1f4}.plot .axis{stroke:var(--mute)}
.plot .series{fill:none;stroke:var(--a);stroke-width:2}.plot .diag{fill:none;stroke:#a0aab4;stroke-dasharray:4 4}
.plot .dot{fill:var(--a);fill-opacity:.45}.plot .dot.front{fill:var(--b);fill-opacity:.95}
.plot .over{fill:#9aa5b1;fill-opacity:.35}.plot .frontline{fill:none;stroke:var(--b);stroke-width:1.5}
.plot .chosen circle{fill:none;stroke:var(--bad);stroke-width:2.5}.plot .chosen text{fill:var(--bad);font-weight:600}
.plot .budget line{stroke:var(--bad);stroke-dasharray:6 4;stroke-opacity:.7}.plot .budget text{fill:var(--bad)}
.bars rect{fill:var(--a);fill-opacity:.8}.bars .value{fill:var(--mute)}.heatmap rect{fill:var(--a)}
.heatmap .cell text{font-size:13px}.heatmap .dark text{fill:#fff}
.plot .at{stroke:#fff;stroke-width:1.5}.legend{display:flex;flex-direction:column;gap:6px;font-size:12px}
.legend i{display:inline-block;width:14px;height:4px;margin:0 6px 3px 0;vertical-align:middle;background:var(--c)}
.s0{--c:#2563eb}.s1{--c:#d97706}.s2{--c:#059669}.s3{--c:#db2777}.s4{--c:#7c3aed}.s5{--c:#0891b2}
.s6{--c:#65a30d}.s7{--c:#92400e}.plot .series[class*=" s"]{stroke:var(--c)}.plot .at{fill:var(--c)}
"""


def render(report: dict) -> str:
    """The whole page of a ``report.json``."""
    b = report["bundle"]
    parts = [_metrics(report)]
    parts.append(_classification(report) if b["task"] == "classification" else _regression(report))
    parts += [_importance(report), _frontier(report["frontier"]), _artifacts(report), _reference(report)]
    rows = " · ".join(f"{k} {v:,}" for k, v in report["rows"].items())
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{esc(b['name'])} v{esc(b['version'])}: build report</title><style>{CSS}</style></head>"
            f"<body><main><h1>{esc(b['name'])} v{esc(b['version'])} for {esc(b['target'])}</h1>"
            f"<p class=\"sub\">{esc(b['task'])} of <b>{esc(b['label'])}</b> · {esc(rows)} rows</p>"
            + "".join(parts) + "</main></body></html>\n")


def _section(id: str, title: str, body: str) -> str:
    return f'<section id="{id}"><h2>{esc(title)}</h2>{body}</section>'


def _fig(svg: str, caption: str) -> str:
    return f'<figure class="fig">{svg}<figcaption>{esc(caption)}</figcaption></figure>'


def _metrics(report: dict) -> str:
    m = report["metrics"]
    test, valid, base = m["test"] or {}, m["valid"] or {}, m["baseline"]
    rows = []
    for k in test:
        cells = [f'<td class="n" data-metric="{esc(k)}" data-split="{s}">{num(d[k]) if k in d else "–"}</td>'
                 for s, d in (("test", test), ("valid", valid), ("baseline", base))]
        rows.append(f"<tr><th>{esc(k)}</th>{''.join(cells)}</tr>")
    extra = ""
    d = report.get("decision")
    if d:
        positive = report["bundle"]["classes"][1]
        extra = (f'<p>Decision: <b>{esc(positive)}</b> when its probability is above <b data-threshold="'
                 f'{d["threshold"]}">{num(d["threshold"])}</b> — {esc(d["reason"])}</p>')
    table = ("<table><tr><th>metric</th><th class=\"n\">test</th><th class=\"n\">validation</th>"
             f"<th class=\"n\">baseline: {esc(m['baseline_name'])}</th></tr>{''.join(rows)}</table>")
    return _section("metrics", "Test metrics beside the baseline", table + extra)


def _classification(report: dict) -> str:
    classes = [str(c) for c in report["bundle"]["classes"]]
    figs = []
    if report.get("confusion"):
        figs.append(_fig(heatmap("plot-confusion", "Confusion matrix of the test split", report["confusion"],
                                 classes, classes, xlabel="predicted", ylabel="true"),
                         "Test rows by true class (rows) and predicted class (columns), at the decision threshold."
                         if len(classes) == 2 else "Test rows by true class (rows) and predicted class (columns): "
                                                   "the most probable class."))
    c = report.get("curves")
    if c:
        at = c["at_threshold"]
        box = Plot.frame()
        roc = Plot("plot-roc", "ROC curve", Scale(0, 1, box[0], box[1]), Scale(0, 1, box[2], box[3]),
                   xlabel="false positive rate", ylabel="true positive rate", data={"threshold": c["threshold"]})
        roc.line([(0, 0), (1, 1)], "diag").line(c["roc"]).mark(at["fpr"], at["tpr"], f"threshold {num(c['threshold'])}")
        pr = Plot("plot-pr", "Precision-recall curve", Scale(0, 1, box[0], box[1]), Scale(0, 1, box[2], box[3]),
                  xlabel="recall", ylabel="precision", data={"threshold": c["threshold"]})
        share = c["positives"] / max(c["rows"], 1)
        pr.line([(0, share), (1, share)], "diag").line(c["pr"])
        if at["precision"] is not None:
            pr.mark(at["recall"], at["precision"], f"threshold {num(c['threshold'])}")
        figs.append(_fig(roc.axes().svg(), "Every threshold's true and false positive rates on the test split; "
                                           "the ring is the bundle's decision threshold."))
        figs.append(_fig(pr.axes().svg(), f"Precision against recall; the dashed line is the positive share "
                                          f"({num(share)}), what guessing reaches."))
    if report.get("per_class"):
        figs += _per_class(report["per_class"])
    return _section("quality", "How the test rows were classified", f'<div class="row">{"".join(figs)}</div>')


def _per_class(per_class: list[dict]) -> list[str]:
    """One-vs-rest ROC and precision-recall curves, a colour per class, each with the point the decision (the
    most probable class) is at, and a legend."""
    box = Plot.frame()
    roc = Plot("plot-roc", "ROC curve of each class against the rest", Scale(0, 1, box[0], box[1]),
               Scale(0, 1, box[2], box[3]), xlabel="false positive rate", ylabel="true positive rate",
               data={"classes": len(per_class)})
    pr = Plot("plot-pr", "Precision-recall curve of each class against the rest", Scale(0, 1, box[0], box[1]),
              Scale(0, 1, box[2], box[3]), xlabel="recall", ylabel="precision", data={"classes": len(per_class)})
    roc.line([(0, 0), (1, 1)], "diag")
    for k, c in enumerate(per_class):
        at, tone = c["at_decision"], f"s{k}"
        roc.line(c["roc"], f"series {tone}").dots([(at["fpr"], at["tpr"])], f"at {tone}", r=5,
                                                  titles=[f"{c['class']}: decided at false positive rate "
                                                          f"{num(at['fpr'])}, true positive rate {num(at['tpr'])}"])
        pr.line(c["pr"], f"series {tone}")
        if at["precision"] is not None:
            pr.dots([(at["recall"], at["precision"])], f"at {tone}", r=5,
                    titles=[f"{c['class']}: decided at recall {num(at['recall'])}, precision "
                            f"{num(at['precision'])}"])
    legend = "".join(f'<span class="key" data-class="{esc(c["class"])}" data-tpr="{c["at_decision"]["tpr"]}">'
                     f'<i class="s{k}"></i>{esc(c["class"])} ({c["positives"]:,} rows)</span>'
                     for k, c in enumerate(per_class))
    return [_fig(roc.axes().svg(), "Each class against the rest over every threshold on its probability; the "
                                   "dot is where the decision (the most probable class) puts it."),
            _fig(pr.axes().svg(), "Precision against recall of each class against the rest, its dot the "
                                  "decision's."),
            f'<div class="legend">{legend}</div>']


def _regression(report: dict) -> str:
    v = report["values"]
    y, p = v["true"], v["predicted"]
    box = Plot.frame()
    both = Scale.around(y + p, box[0], box[1])
    fit = Plot("plot-predicted", "Predicted against true values", both,
               Scale(both.lo, both.hi, box[2], box[3]), xlabel="true value", ylabel="predicted value",
               data={"rows": len(y)})
    fit.line([(both.lo, both.lo), (both.hi, both.hi)], "diag").dots(list(zip(y, p, strict=True)), r=2.5)
    residuals = [a - b for a, b in zip(y, p, strict=True)]
    res = Plot("plot-residuals", "Residuals against predicted values", Scale.around(p, box[0], box[1]),
               Scale.around(residuals, box[2], box[3], zero=True), xlabel="predicted value",
               ylabel="true − predicted", data={"rows": len(y)})
    res.line([(res.x.lo, 0), (res.x.hi, 0)], "diag").dots(list(zip(p, residuals, strict=True)), r=2.5)
    shown = f"{len(y):,} of the {v['rows']:,} test rows" if len(y) < v["rows"] else f"all {v['rows']:,} test rows"
    figs = [_fig(fit.axes().svg(), f"{shown}; on the dashed line the prediction is exact."),
            _fig(res.axes().svg(), "The error of each row against what was predicted: a band around 0 with no "
                                   "shape is what a good model leaves.")]
    return _section("quality", "How close the test predictions are", f'<div class="row">{"".join(figs)}</div>')


def _importance(report: dict) -> str:
    imp = report["importance"]
    names, drops = [i["name"] for i in imp["inputs"]], [i["drop"] for i in imp["inputs"]]
    svg = bars("plot-importance", "Permutation importance", names, drops, width=560,
               xlabel=f"drop of test {imp['metric']} when the input is shuffled", data={"metric": imp["metric"]})
    return _section("importance", "Which inputs the model relies on",
                    _fig(svg, "Each input shuffled across the test rows (the others kept): how much the test "
                              "metric falls. Near 0: the model barely uses it."))


def _frontier(f: dict) -> str:
    trials = [t for t in f["trials"] if t["model_bytes"] and t["latency_ms"]]
    if not trials:
        return _section("frontier", "The search", '<p class="note">No trial recorded a size and a latency.</p>')
    kib = [t["model_bytes"] / 1024 for t in trials]
    budget_kib = (f["budgets"]["max_model_bytes"] or 0) / 1024 or None
    budget_ms = f["budgets"]["latency_budget_ms"]
    box = Plot.frame(520, 340)
    x = Scale.around(kib + ([budget_kib] if budget_kib and budget_kib < 4 * max(kib) else []), box[0], box[1],
                     log=True)
    y = Scale.around([t["latency_ms"] for t in trials] + ([budget_ms] if budget_ms else []), box[2], box[3], log=True)
    cost = Plot("plot-frontier", "Model size against predicted latency", x, y, width=520, height=340,
                xlabel="model size (KiB)", ylabel="predicted latency on the target (ms)",
                data={"chosen": f["chosen"], "trials": len(trials)})
    loss = Plot("plot-frontier-loss", "Validation loss against model size", x,
                Scale.around([t["loss"] for t in trials], box[2], box[3]), width=520, height=340,
                xlabel="model size (KiB)", ylabel=f"validation loss ({f['metric']}; lower is better)")
    for plot, value in ((cost, "latency_ms"), (loss, "loss")):
        for cls, keep in (("dot over", lambda t: not t["feasible"]), ("dot", lambda t: t["feasible"]),
                          ("dot front", lambda t: t["frontier"])):
            chosen = [t for t in trials if keep(t)]
            plot.dots([(t["model_bytes"] / 1024, t[value]) for t in chosen], cls, r=4,
                      titles=[f"trial {t['iteration']} {t['learner']}: loss {num(t['loss'])}, "
                              f"{num(t['model_bytes'] / 1024)} KiB, {num(t['latency_ms'])} ms" for t in chosen])
        pick = next((t for t in trials if t["iteration"] == f["chosen"]), None)
        if pick is not None:
            plot.mark(pick["model_bytes"] / 1024, pick[value], f"chosen: {pick['learner']}")
        if budget_kib and x.lo <= budget_kib <= x.hi:
            plot.rule(x=budget_kib, label=f"max {_kib(budget_kib)}")
    front = sorted((t["model_bytes"] / 1024, t["loss"]) for t in trials if t["frontier"])
    if len(front) > 1:
        loss.line(front, "frontline")
    if budget_ms and y.lo <= budget_ms <= y.hi:
        cost.rule(y=budget_ms, label=f"latency budget {num(budget_ms)} ms")
    beyond = budget_kib and not x.lo <= budget_kib <= x.hi  # the latency budget is always on the y range
    caption = (f"{len(trials)} trials; orange: the frontier (the best loss at each size and latency), grey: over a "
               "budget, ringed: the model shipped. Dashed red: the target profile's budgets"
               + (f"; beyond the plotted range: max {_kib(budget_kib)}." if beyond else "."))
    body = f'<div class="row">{_fig(cost.axes().svg(), caption)}{_fig(loss.axes().svg(), "")}</div>'
    return _section("frontier", "The search: size, latency and loss of every trial", body)


def _kib(kib: float) -> str:
    """A size given in KiB, in MiB from 1,024 KiB up: ``125 KiB``, ``19.1 MiB``."""
    return f"{num(kib / 1024)} MiB" if kib >= 1024 else f"{num(kib)} KiB"


def _artifacts(report: dict) -> str:
    rows = []
    for a in report["artifacts"]:
        p, metric = a["parity"], a["metric_drop"]
        ok = '<span class="pass">passed</span>' if p.get("passed") else '<span class="fail">failed</span>'
        tol = p.get("tolerance") or {}
        allowed = tol.get("atol", tol.get("rtol"))
        drop = (f"{esc(metric['metric'])} {num(metric['value'])} vs {num(metric['fp32'])} fp32"
                if metric else "same as the host model")
        # a reduced precision is judged by its test metric's drop, not by the fp32 parity tolerance
        if not metric:
            judged = f"(allowed {num(allowed)})"
        elif metric["metric"] == "rmse":  # the drop is rmse's relative increase
            judged = (f"(reduced precision: judged by its rmse, {metric['drop']:+.2%} of {metric['allowed']:+.2%} "
                      "allowed)")
        else:
            judged = (f"(reduced precision: judged by its {esc(metric['metric'])}, a drop of {num(metric['drop'])} "
                      f"of {num(metric['allowed'])} allowed)")
        rows.append(f'<tr data-artifact="{esc(a["path"])}"><td><code>{esc(a["path"])}</code></td>'
                    f'<td>{esc(a["format"])}</td><td>{esc(a["precision"])}</td>'
                    f'<td class="n" data-bytes="{a["bytes"]}">{a["bytes"] / 1024:,.1f} KiB</td>'
                    f'<td><code data-sha="{esc(a["sha256"][:12])}">{esc(a["sha256"][:12])}</code></td>'
                    f'<td>{ok} on {p.get("rows") or 0:,} rows: {p.get("label_mismatches") or 0} label mismatches, '
                    f'max diff {num(p.get("max_abs_diff"))} {judged}</td><td>{drop}</td></tr>')
    table = ("<table><tr><th>file</th><th>format</th><th>precision</th><th>size</th><th>sha256</th>"
             f"<th>parity through edgeml_runtime</th><th>test metric</th></tr>{''.join(rows)}</table>")
    skipped = "".join(f'<li data-not-shipped="{esc(n["format"])} {esc(n["precision"])}"><b>{esc(n["format"])} '
                      f'{esc(n["precision"])}</b>: {esc(n["reason"])}</li>' for n in report["not_shipped"])
    more = f"<h2>Not shipped</h2><ul>{skipped}</ul>" if skipped else '<p class="note">Everything asked for shipped.</p>'
    return _section("artifacts", "Artifacts in the bundle", table + _firmware(report.get("firmware")) + more)


def _firmware(f: dict | None) -> str:
    """What runs on a microcontroller whose firmware form is plain C: written from model.onnx by edgeml firmware."""
    if not f:
        return ""
    if "reason" in f:
        return (f'<p data-firmware="c">The target\'s firmware form, plain C, cannot be written from model.onnx: '
                f'{esc(f["reason"])}.</p>')
    return (f'<p data-firmware="c" data-flash="{f["flash"]}" data-ram="{f["ram"]}">On the device: the plain C '
            f'that <code>edgeml firmware</code> writes from model.onnx (the target\'s firmware form), about '
            f'<b>{f["flash"] / 1024:,.1f} KiB</b> of flash and <b>{f["ram"]:,} B</b> of stack, no arena.</p>')


def _reference(report: dict) -> str:
    figs = []
    for i, c in enumerate(report["reference"]):
        if not c["monitored"]:
            figs.append(f'<div class="fig" data-reference="{esc(c["name"])}"><b>{esc(c["name"])}</b> '
                        f'<span class="note">({esc(c["kind"])}, not monitored: {esc(c["reason"])})</span></div>')
            continue
        labels, shares = c["bins"], c["shares"]
        if len(labels) > 12:  # many categories: the twelve most frequent
            top = sorted(range(len(labels)), key=lambda j: (-shares[j], j))[:12]
            labels, shares = [labels[j] for j in top], [shares[j] for j in top]
        svg = bars(f"plot-reference-{i}", f"Reference histogram of {c['name']}", labels, shares, width=340,
                   fmt=lambda v: f"{v:.1%}", xlabel="share of training rows", data={"column": c["name"]})
        figs.append(_fig(f'<div data-reference="{esc(c["name"])}"><b>{esc(c["name"])}</b> '
                         f'<span class="note">{esc(c["kind"])}, missing {c["missing_rate"]:.1%}</span></div>' + svg,
                         ""))
    return _section("reference", "The drift reference: each input as the model learnt it",
                    f'<div class="grid3">{"".join(figs)}</div>')


__all__ = ["render"]
