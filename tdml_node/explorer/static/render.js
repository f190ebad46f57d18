// DOM helpers and the readings of protocol values the tables show. Pure
// presentation: every function takes JSON from the RPC and returns nodes or text.

export function el(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick") n.addEventListener("click", v);
    else n.setAttribute(k, v);
  }
  for (const c of children) n.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return n;
}

export function short(hex) {
  return typeof hex === "string" && hex.length > 18 ? `${hex.slice(0, 10)}…${hex.slice(-6)}` : String(hex ?? "");
}

export function hashCell(hex) {
  return el("td", { class: "hash", title: hex ?? "" }, short(hex));
}

export function fillRows(tbody, rows, empty) {
  tbody.replaceChildren(...rows);
  if (rows.length === 0) {
    const cols = tbody.closest("table").querySelectorAll("thead th").length || 1;
    tbody.append(el("tr", { class: "empty" }, el("td", { colspan: cols }, empty)));
  }
}

export function row(...cells) {
  return el("tr", {}, ...cells.map((c) => (c instanceof HTMLTableCellElement ? c : el("td", {}, c instanceof Node ? c : String(c ?? "")))));
}

export function facts(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v instanceof Node ? v : String(v ?? "—"))]));
}

const LIST_SHOWN = 6; // a longer list (a preprocessing's per-feature means) shows its length and first items

// A protocol value as "path: value" pairs, skipping the "type" tags; named
// arguments ({name, value}) read as name=value.
export function flatten(value, prefix = "") {
  if (Array.isArray(value)) {
    const named = value.every((v) => v && typeof v === "object" && "name" in v && "value" in v);
    const items = value.map((v) => (named ? `${v.name}=${v.value}` : typeof v === "object" ? JSON.stringify(v) : String(v)));
    if (items.length > LIST_SHOWN) return [[prefix, `${items.length} values: ${items.slice(0, LIST_SHOWN).join(", ")}, …`]];
    return [[prefix, items.join(", ") || "—"]];
  }
  if (value && typeof value === "object") {
    return Object.entries(value).filter(([k]) => k !== "type").flatMap(([k, v]) => flatten(v, prefix ? `${prefix}.${k}` : k));
  }
  return [[prefix, value === null ? "—" : String(value)]];
}

const FAILURES = ["none", "wrong parent", "replay differs", "result differs", "malformed"];

// What a piece of evidence says: its kind, who pays for it, the unit and the failure.
export function readEvidence(ev) {
  if (ev.type === "Equivocation") {
    const vote = ev.vote_a.vote ?? {};
    return { kind: "double vote", offender: vote.validator, job: null, unit: `h${vote.height} r${vote.round}`, failure: "two votes" };
  }
  const sub = ev.submission.submission, verdict = ev.verdict.verdict;
  const offender = ev.type === "WorkFraud" ? sub.trainer : verdict.validator;
  const kind = { WorkFraud: "work fraud (trainer)", FalseVerdict: "false verdict (checker)", FalsePass: "false pass (checker)" }[ev.type] ?? ev.type;
  let failure = FAILURES[verdict.failure] ?? String(verdict.failure);
  if (verdict.failure === 2) failure += ` at inner step ${verdict.failed_step}`;
  return { kind, offender, job: sub.job, unit: `${sub.step} / ${sub.shard}`, failure };
}

// addressOf(public key) -> the offender's address where known, so it reads as in the trainers table.
export function evidenceRow(height, ev, addressOf) {
  const r = readEvidence(ev);
  const details = el("details", {}, el("summary", {}, "show"), el("pre", {}, JSON.stringify(ev, null, 1)));
  return row(String(height), r.kind, hashCell(addressOf(r.offender) ?? r.offender), r.unit, r.failure, details);
}

// A transaction's kind and a one-line reading of what it does.
export function readTransaction(signed) {
  const payload = signed.tx.payload;
  switch (payload.type) {
    case "Transfer": return ["transfer", `${payload.amount} to ${short(payload.to)}`];
    case "RegisterNode": return ["register node", `stake ${payload.stake}, roles ${payload.roles}, ${payload.endpoint}`];
    case "SubmitJob": return ["submit job", `${payload.spec.name}: ${payload.spec.steps} steps, budget ${payload.budget}`];
    case "ShareDataKey": return ["share data key", `job ${short(payload.job)} to ${payload.shares.length} new member(s)`];
    default: return [payload.type, ""];
  }
}
