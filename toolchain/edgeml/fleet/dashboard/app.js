// The edgeml fleet dashboard: plain JavaScript over the controller's read-only JSON API (/api/v1, see
// docs/fleet.md), drawn with the DOM and inline SVG. The event stream (/api/v1/events) sends `change` whenever
// the store moves; the page then fetches again what it shows, with no reload. Nothing comes from another origin.

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const VIEWS = { fleet: drawFleet, drift: drawDrift, models: drawModels, rollouts: drawRollouts };

/** What is chosen (view, filters, the drift cell and decision shown) and the last status read. */
const state = { view: "fleet", fleet: "", model: "", bundle: "", device: "", cell: null, decision: null,
                evidence: null, status: null };

// -- building the DOM -----------------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

function svg(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG, tag), attrs, children);
}

function fill(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function table(head, rows, attrs = {}) {
  return el("table", attrs, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
            el("tbody", {}, rows));
}

function pill(text, kind = text) {
  return el("span", { class: `pill p-${String(kind ?? "none").replace(/[^a-z_-]/gi, "")}` }, text ?? "—");
}

function empty(text) {
  return el("p", { class: "empty" }, text);
}

const when = (t) => (t === null || t === undefined ? "—"
  : new Date(typeof t === "number" ? t * 1000 : t).toISOString().replace("T", " ").slice(0, 19) + " UTC");
const clock = (seconds) => new Date(seconds * 1000).toISOString().slice(11, 19);
const number = (x, digits = 3) => (x === null || x === undefined ? "—" : Number(x).toFixed(digits));
const percent = (x) => `${(100 * x).toFixed(1)} %`;
// A device's outbox: messages waiting for the broker when its last window was stored (format 7), and the
// windows its full outbox dropped in all.
const outbox = (d) => {
  const waiting = d.outbox_backlog == null ? "—" : `${d.outbox_backlog} waiting`;
  return d.outbox_dropped ? `${waiting} · ${d.outbox_dropped} dropped` : waiting;
};
const bundleLabel = (name, version, sha) => (name ? `${name} ${version}` : `unknown ${(sha || "").slice(0, 12)}`);

// -- the API --------------------------------------------------------------------------------------------------
async function api(path, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null
                                                                           && v !== undefined)).toString();
  const url = `/api/v1/${path}${query ? `?${query}` : ""}`;
  const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${url}: ${body.error || response.statusText}`);
  return body;
}

function problem(text) {
  $("problem").hidden = !text;
  $("problem").textContent = text || "";
}

// -- drawing, one refresh at a time (a change while drawing draws again after) -----------------------------------
let drawing = false;
let again = false;

async function refresh() {
  if (drawing) {
    again = true;
    return;
  }
  drawing = true;
  try {
    do {
      again = false;
      await draw();
    } while (again);
  } finally {
    drawing = false;
  }
}

async function draw() {
  try {
    state.status = await api("status");
    filters();
    await VIEWS[state.view]();
    problem(null);
    document.body.dataset.drawn = String(Number(document.body.dataset.drawn || 0) + 1);
  } catch (err) {
    problem(`cannot read the controller: ${err.message}`);
  }
}

/** Set a select's options (value, text) unless they are those already, then its value. */
function options(select, pairs, value) {
  const same = select.options.length === pairs.length
    && pairs.every(([v, t], i) => select.options[i].value === v && select.options[i].textContent === t);
  if (!same) select.replaceChildren(...pairs.map(([v, t]) => el("option", { value: v }, t)));
  select.value = value;
}

/** The bundles (identity → label) seen in ``fleet`` (every fleet: ""), on devices or judged. */
function bundles(fleet) {
  const out = new Map();
  for (const [name, f] of Object.entries(state.status.fleets)) {
    if (fleet && name !== fleet) continue;
    for (const d of f.devices) {
      if (d.bundle && !out.has(d.bundle)) out.set(d.bundle, bundleLabel(d.bundle_name, d.bundle_version, d.bundle));
    }
    for (const [sha, b] of Object.entries(f.bundles)) out.set(sha, bundleLabel(b.name, b.version, sha));
  }
  return out;
}

function filters() {
  const fleets = Object.keys(state.status.fleets);
  if (state.fleet && !fleets.includes(state.fleet)) state.fleet = "";
  options($("fleet-filter"), [["", "every fleet"], ...fleets.map((f) => [f, f])], state.fleet);
  const models = bundles(state.fleet);
  if (state.model && !models.has(state.model)) state.model = "";
  options($("model-filter"), [["", "every model"], ...models], state.model);
}

// -- Fleet ----------------------------------------------------------------------------------------------------
async function drawFleet() {
  const fleets = Object.entries(state.status.fleets).filter(([name]) => !state.fleet || name === state.fleet);
  const cards = fleets.map(([name, f]) => {
    const online = f.devices.filter((d) => d.online).length;
    return el("div", { class: "card", "data-fleet": name },
      el("h2", {}, name),
      el("p", { class: "counts" }, el("strong", { class: "online" }, `${online} online`), " · ",
         el("span", { class: "offline" }, `${f.devices.length - online} offline`), ` · ${f.devices.length} devices`),
      Object.entries(f.bundles).map(([sha, b]) => el("p", { class: "bundle" },
        bundleLabel(b.name, b.version, sha), " ", pill(b.state),
        b.anomalies?.length ? ` anomalies: ${b.anomalies.join(", ")}` : "")),
      el("p", { class: "muted" }, f.last_decision
        ? `last decision #${f.last_decision.id} ${f.last_decision.kind}, ${when(f.last_decision.time)}`
        : "no decision yet"));
  });
  $("fleet-summary").replaceChildren(...cards);
  const rows = fleets.flatMap(([name, f]) => f.devices.filter((d) => !state.model || d.bundle === state.model)
    .map((d) => el("tr", { "data-device": d.device, "data-fleet": name, "data-online": String(d.online) },
      el("td", {}, name), el("td", {}, d.device), el("td", {}, pill(d.online ? "online" : "offline")),
      el("td", {}, bundleLabel(d.bundle_name, d.bundle_version, d.bundle)), el("td", {}, d.model),
      el("td", {}, d.runtime_version ?? "—"), el("td", {}, when(d.last_window)),
      el("td", { class: "outbox", "data-backlog": String(d.outbox_backlog ?? ""),
                 "data-dropped": String(d.outbox_dropped ?? 0) }, outbox(d)))));
  $("fleet-devices").replaceChildren(rows.length
    ? table(["fleet", "device", "state", "bundle", "model", "runtime", "last window", "outbox"], rows,
            { id: "devices" })
    : empty(fleets.length ? "no devices of this model" : "no devices yet: start the devices (edgeml-runtime run "
      + "BUNDLE --fleet NAME --broker URL); they appear here as they say hello"));
}

// -- Drift ----------------------------------------------------------------------------------------------------
/** The fleet the drift view is of: the chosen one, else the first with a bundle the registry knows. */
function driftFleet() {
  if (state.fleet) return state.fleet;
  const fleets = Object.entries(state.status.fleets);
  const found = fleets.find(([, f]) => Object.values(f.bundles).some((b) => b.known)) || fleets[0];
  return found ? found[0] : "";
}

async function drawDrift() {
  const fleet = driftFleet();
  const f = state.status.fleets[fleet];
  const known = f ? Object.entries(f.bundles).filter(([, b]) => b.known) : [];
  const bundle = [state.bundle, state.model].find((b) => b && f?.bundles[b]?.known) || (known[0] || [""])[0];
  options($("drift-bundle"), known.map(([sha, b]) => [sha, bundleLabel(b.name, b.version, sha)]), bundle);
  const devices = f ? f.devices.map((d) => d.device) : [];
  if (!devices.includes(state.device)) state.device = "";
  options($("drift-device"), [["", "whole fleet"], ...devices.map((d) => [d, d])], state.device);
  if (!bundle) {
    $("drift-title").textContent = "";
    $("drift-heatmap").replaceChildren(empty(f ? `no bundle of fleet ${fleet} is in the registry, so its drift `
      + "cannot be judged: edgeml registry add BUNDLE" : "no devices yet"));
    ["drift-legend", "drift-cell", "drift-decisions", "drift-anomalies"].forEach((id) => $(id).replaceChildren());
    $("drift-evidence").hidden = true;
    return;
  }
  const where = { fleet, bundle, device: state.device };
  const [grid, decisions] = await Promise.all([api("drift", where), api("decisions", { fleet, last: 50 })]);
  $("drift-title").textContent = `fleet ${fleet}${state.device ? `, device ${state.device}` : ""}: PSI per column `
    + `and slice of the horizon (${grid.slices.length} slices)`;
  heatmap(grid);
  $("drift-legend").replaceChildren(legend());
  const cell = state.cell;
  if (cell && cell.fleet === fleet && cell.bundle === bundle && grid.columns.includes(cell.column)
      && grid.slices.some((s) => s.start === cell.start)) {
    await drawCell({ ...where, column: cell.column, start: cell.start });
  } else {
    state.cell = null;
    $("drift-cell").replaceChildren(empty("click a cell of the heatmap: its reference histogram against the "
      + "slice's counts"));
  }
  drawDecisions(decisions.filter((d) => d.bundle === bundle).reverse());
  await drawEvidence();
  const b = f.bundles[bundle];
  const anomalous = [...new Set([...(b.anomalies || []), ...(b.current_anomalies || [])])];
  $("drift-anomalies").replaceChildren(...(anomalous.length ? anomalous.map((d) => el("li", { "data-device": d },
    d, " ", (b.anomalies || []).includes(d) ? pill("decided", "anomaly") : pill("in the horizon", "moderate")))
    : [el("li", { class: "muted" }, "none")]));
}

function colour(status, psi) {
  if (!status) return "#e8eaed";
  const p = Math.max(0, psi ?? 0);
  if (status === "ok") return `hsl(140, 42%, ${Math.round(86 - Math.min(p / 0.25, 1) * 24)}%)`;
  if (status === "moderate") return `hsl(38, 92%, ${Math.round(68 - Math.min(p / 0.5, 1) * 14)}%)`;
  return `hsl(4, 72%, ${Math.round(56 - Math.min(p / 2, 1) * 26)}%)`;
}

function heatmap(grid) {
  const { slices, columns } = grid;
  const cw = Math.max(8, Math.min(30, Math.floor(900 / Math.max(slices.length, 1))));
  const ch = 24;
  const left = 180;
  const top = 30;
  const width = left + cw * slices.length + 16;
  const height = top + ch * columns.length + 28;
  const filled = slices.map((s, i) => (s.rows ? i : -1)).filter((i) => i >= 0);
  const latest = filled.length ? filled[filled.length - 1] : -1;
  const root = svg("svg", { class: "heatmap", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                            "aria-label": "PSI per column and slice" });
  slices.forEach((s, i) => root.append(svg("rect", { x: left + i * cw, y: top - 12, width: cw - 1, height: 6,
    class: `verdict v-${s.status ?? "none"}`, "data-slice": i, "data-status": s.status ?? "none" },
    svg("title", {}, `${clock(s.start)}–${clock(s.end)}: ${s.status ?? "no rows"}, ${s.windows} windows, `
      + `${s.rows} rows`))));
  columns.forEach((column, j) => {
    const now = latest >= 0 ? grid.status[latest][j] : null;
    const y = top + j * ch;
    root.append(svg("text", { x: left - 10, y: y + ch / 2 + 4, "text-anchor": "end", "data-column": column,
      "data-status": now ?? "none", class: `row-label${now === "significant" ? " drifted" : ""}` },
      now === "significant" ? `⚠ ${column}` : column));
    slices.forEach((s, i) => {
      const psi = grid.psi[i][j];
      const status = grid.status[i][j];
      const chosen = state.cell && state.cell.column === column && state.cell.start === s.start;
      root.append(svg("rect", { x: left + i * cw, y, width: cw - 1, height: ch - 2, rx: 2,
        class: `cell s-${status ?? "none"}${chosen ? " chosen" : ""}`, fill: colour(status, psi),
        "data-column": column, "data-slice": i, "data-start": s.start, "data-status": status ?? "none",
        "data-psi": psi ?? "", onclick: () => choose(grid, column, s.start) },
        svg("title", {}, `${column}, ${clock(s.start)}–${clock(s.end)}: `
          + (status ? `PSI ${number(psi)} (${status}), ${s.rows} rows` : "no rows"))));
    });
  });
  const axis = top + ch * columns.length + 16;
  for (const i of new Set([0, Math.floor(slices.length / 2), slices.length - 1])) {
    if (i < 0) continue;
    root.append(svg("text", { x: left + i * cw, y: axis, class: "axis" }, clock(slices[i].start)));
  }
  root.append(svg("text", { x: left - 10, y: axis, "text-anchor": "end", class: "axis" }, "UTC"));
  $("drift-heatmap").replaceChildren(root);
}

function legend() {
  const swatch = (fillColour, text) => el("span", { class: "key" },
    svg("svg", { width: 14, height: 14, viewBox: "0 0 14 14" }, svg("rect", { width: 14, height: 14, rx: 2,
                                                                              fill: fillColour })), text);
  return el("div", {}, swatch(colour(null), "no rows"), swatch(colour("ok", 0.02), "ok"),
    swatch(colour("moderate", 0.15), "moderate"), swatch(colour("significant", 0.5), "significant (drift)"),
    el("span", { class: "muted" }, " darker: higher PSI · the strip above: the slice's verdict"));
}

// A cell is named by its slice's start (seconds since the epoch): the horizon moves on, an index would not stay.
async function choose(grid, column, start) {
  const fleet = grid.fleet;
  state.cell = { fleet, bundle: grid.bundle, column, start };
  for (const node of document.querySelectorAll("#drift-heatmap rect.cell")) {
    node.classList.toggle("chosen", node.dataset.column === column && Number(node.dataset.start) === start);
  }
  try {
    await drawCell({ fleet, bundle: grid.bundle, device: state.device, column, start });
  } catch (err) {
    problem(err.message);
  }
}

async function drawCell(where) {
  const cell = await api("drift/cell", where);
  const n = cell.labels.length;
  const bw = 16;
  const group = 2 * bw + 14;
  const left = 52;
  const top = 14;
  const high = 170;
  const width = left + n * group + 24;
  const height = top + high + 96;
  const most = Math.max(0.01, ...cell.reference, ...cell.shares);
  const y = (v) => top + high - (v / most) * high;
  const root = svg("svg", { class: "histogram", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                            "aria-label": `reference against current shares of ${cell.column}` });
  for (const v of [0, most / 2, most]) {
    root.append(svg("line", { x1: left - 4, x2: width - 12, y1: y(v), y2: y(v), class: "grid" }),
                svg("text", { x: left - 8, y: y(v) + 4, "text-anchor": "end", class: "axis" }, percent(v)));
  }
  cell.labels.forEach((label, i) => {
    const x = left + i * group + 4;
    const reference = cell.reference[i];
    const share = cell.shares[i];
    root.append(
      svg("rect", { x, y: y(reference), width: bw, height: Math.max(0, top + high - y(reference)),
        class: "bar reference", "data-label": label, "data-value": String(reference) },
        svg("title", {}, `${label}: reference ${percent(reference)}`)),
      svg("rect", { x: x + bw, y: y(share), width: bw, height: Math.max(0, top + high - y(share)),
        class: "bar current", "data-label": label, "data-value": String(share), "data-count": cell.counts[i] },
        svg("title", {}, `${label}: now ${percent(share)} (${cell.counts[i]} rows)`)),
      svg("text", { x: x + bw, y: top + high + 14, "text-anchor": "end", class: "axis label",
                    transform: `rotate(-35 ${x + bw} ${top + high + 14})` }, label));
  });
  const rows = cell.labels.map((label, i) => el("tr", {}, el("td", {}, label), el("td", {}, percent(cell.reference[i])),
    el("td", {}, cell.counts[i]), el("td", {}, percent(cell.shares[i]))));
  $("drift-cell").replaceChildren(
    el("h2", { "data-column": cell.column }, `${cell.column}, ${clock(cell.start)}–${clock(cell.end)} UTC: `,
       cell.status ? [`PSI ${number(cell.psi)} `, pill(cell.status)] : "no rows in this slice",
       el("span", { class: "muted" }, ` · ${cell.rows} rows${cell.device ? ` of ${cell.device}` : ""}`)),
    el("p", { class: "keys" }, el("span", { class: "key ref" }, "reference"), el("span", { class: "key cur" },
       "this slice")),
    el("div", { class: "histogram-row" }, root,
       table(["bin", "reference", "rows", "share"], rows, { class: "compact", id: "cell-table" })));
}

function drawDecisions(decisions) {
  $("drift-decisions").replaceChildren(...(decisions.length ? decisions.map((d) => el("li", {},
    el("button", { type: "button", class: `decision${state.decision === d.id ? " chosen" : ""}`,
                   "data-id": d.id, "data-kind": d.kind, onclick: () => showDecision(d.id) },
       el("strong", {}, `#${d.id} `), pill(d.kind), d.device ? ` ${d.device}` : "", ` · ${when(d.time)}`,
       el("span", { class: "summary" }, d.summary))))
    : [el("li", { class: "muted" }, "no decision yet")]));
}

async function showDecision(id) {
  state.decision = id;
  for (const node of document.querySelectorAll("#drift-decisions button")) {
    node.classList.toggle("chosen", Number(node.dataset.id) === id);
  }
  try {
    await drawEvidence();
  } catch (err) {
    problem(err.message);
  }
}

async function drawEvidence() {
  const pre = $("drift-evidence");
  if (state.decision === null) {
    pre.hidden = true;
    return;
  }
  if (!state.evidence || state.evidence.id !== state.decision) state.evidence = await api(`decisions/${state.decision}`);
  pre.textContent = `decision #${state.evidence.id} (${state.evidence.kind}), its evidence:\n`
    + JSON.stringify(state.evidence.evidence, null, 2);
  pre.hidden = false;
}

// -- Models ---------------------------------------------------------------------------------------------------
async function drawModels() {
  const models = await api("models", { fleet: state.fleet });
  const versions = models.versions.filter((v) => !state.model || v.bundle_sha256 === state.model);
  $("models-versions").replaceChildren(versions.length ? table(
    ["version", "fleet", "cohort", "bundle", "status", "aliases", "how", "created"],
    versions.map((v) => el("tr", { "data-version": v.version }, el("td", {}, v.version), el("td", {}, v.fleet),
      el("td", {}, v.cohort || "—"), el("td", {}, `${v.name} ${v.bundle_version}`), el("td", {}, pill(v.status)),
      el("td", {}, v.aliases.length ? v.aliases.map((a) => el("span", { class: "alias" }, a)) : "—"),
      el("td", {}, v.action), el("td", {}, when(v.created)))))
    : empty("no registry versions yet: edgeml registry add BUNDLE --fleet NAME"));
  const score = (side) => (side ? `v${side.version}: ${number(side.score, 4)}` : "—");
  $("models-retrains").replaceChildren(models.retrains.length ? table(
    ["#", "fleet", "trigger", "why", "status", "requested", "metric", "challenger", "champion", "outcome"],
    models.retrains.map((r) => el("tr", { "data-retrain": r.id }, el("td", {}, r.id), el("td", {}, r.fleet),
      el("td", {}, r.trigger), el("td", {}, r.reason + (r.decision_id ? ` (#${r.decision_id})` : "")),
      el("td", {}, pill(r.status)), el("td", {}, when(r.requested)), el("td", {}, r.result.metric ?? "—"),
      el("td", {}, score(r.result.challenger)), el("td", {}, score(r.result.champion)),
      el("td", { class: "reason" }, r.error || r.result.reason || "—"))))
    : empty("no retrains yet: they are requested by decisions or the schedule ([trigger] in fleet.toml)"));
}

// -- Rollouts -------------------------------------------------------------------------------------------------
async function drawRollouts() {
  const list = await api("rollouts", { fleet: state.fleet });
  if (!list.length) {
    $("rollouts-list").replaceChildren(empty("no rollouts yet: edgeml rollout start RELEASE --fleet NAME"));
    return;
  }
  const details = await Promise.all(list.slice(0, 10).map((r) => api(`rollouts/${r.id}`)));
  $("rollouts-list").replaceChildren(...details.map((r) => el("article", { class: "card rollout", "data-id": r.id },
    el("h2", {}, `Rollout #${r.id} of release ${r.release}, fleet ${r.fleet} `, pill(r.state)),
    el("p", {}, r.state === "done" ? `${r.waves} waves, ${r.size} devices` : `wave ${r.wave + 1} of ${r.waves}, `
      + `${r.size} devices`, r.reason ? ` · ${r.reason}` : "",
       r.rollback_release !== null ? ` · rollback release ${r.rollback_release}` : ""),
    table(["wave", "devices", "announced", "executed", "failed"], r.plan.map((w) => el("tr", {},
      el("td", {}, w.wave + 1), el("td", {}, w.devices), el("td", {}, w.announced), el("td", {}, w.executed),
      el("td", {}, w.failed))), { class: "compact" }),
    table(["device", "wave", "step", "why", "announced", "updated"], r.devices.map((d) => el("tr",
      { "data-device": d.device }, el("td", {}, d.device), el("td", {}, d.wave + 1), el("td", {}, pill(d.step)),
      el("td", {}, d.reason ?? "—"), el("td", {}, when(d.announced)), el("td", {}, when(d.updated)))),
      { class: "compact" }),
    el("details", {}, el("summary", {}, `${r.transitions.length} transitions`), el("ol", {},
      r.transitions.map((t) => el("li", {}, `${when(t.time)}: ${t.from ?? ""} → ${t.to ?? ""} ${t.reason ?? ""}`)))))));
}

// -- wiring ---------------------------------------------------------------------------------------------------
function show(view) {
  state.view = VIEWS[view] ? view : "fleet";
  for (const button of document.querySelectorAll("#tabs button")) {
    button.setAttribute("aria-selected", String(button.dataset.view === state.view));
  }
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.dataset.view !== state.view;
  }
}

function live() {
  const stream = new EventSource("/api/v1/events");
  const say = (text) => {
    $("live").dataset.state = text;
    $("live").textContent = text;
  };
  stream.addEventListener("open", () => say("live"));
  stream.addEventListener("change", () => {
    say("live");
    refresh();
  });
  stream.addEventListener("error", (event) => {
    if (event.data) problem(`the store: ${JSON.parse(event.data).error}`);
    else say(stream.readyState === EventSource.CLOSED ? "closed" : "reconnecting…");
  });
  window.addEventListener("pagehide", () => stream.close());
}

function start() {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => {
      history.replaceState(null, "", `#${button.dataset.view}`);
      show(button.dataset.view);
      refresh();
    });
  }
  const on = (id, change) => $(id).addEventListener("change", (event) => {
    change(event.target.value);
    refresh();
  });
  on("fleet-filter", (value) => Object.assign(state, { fleet: value, bundle: "", device: "", cell: null,
                                                       decision: null }));
  on("model-filter", (value) => Object.assign(state, { model: value, bundle: "", cell: null }));
  on("drift-bundle", (value) => Object.assign(state, { bundle: value, cell: null }));
  on("drift-device", (value) => Object.assign(state, { device: value }));
  show(location.hash.slice(1));
  refresh();
  live();
}

start();
