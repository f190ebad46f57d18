// The explorer: loads the chain head, recent blocks, jobs, validators and
// peers over JSON-RPC, then follows the chain through the newBlocks
// subscription (no polling). Refreshes are coalesced: a block that arrives
// while one is in flight schedules exactly one more.

import { batch, call, subscribeBlocks } from "./rpc.js";
import { drawChart } from "./chart.js";
import { el, evidenceRow, facts, fillRows, flatten, hashCell, readEvidence, readTransaction, row, short } from "./render.js";

const SHOWN_BLOCKS = 20;   // rows in the recent-blocks table
const SCANNED_BLOCKS = 200; // blocks read in full at load for transactions, trainers and evidence
const HISTORY_LIMIT = 1000; // tdml_getJobHistory's maximum

const $ = (id) => document.getElementById(id);

const state = {
  head: 0,
  blocks: new Map(),      // height -> full block view, plus txHashes
  trainers: new Map(),    // job id -> Set of trainer public keys seen in submissions
  evidence: [],           // [{height, ev}] in block order
  jobs: [],
  selected: null,         // job id
  history: new Map(),     // job id -> step outcomes, oldest first
  addresses: new Map(),   // public key -> address (tdml_getTrainer answers it; it never changes)
};

const addressOf = (key) => state.addresses.get(key);

async function resolveAddresses(keys) {
  const unknown = [...new Set(keys)].filter((k) => k && !state.addresses.has(k));
  const records = await batch(unknown.map((k) => ["tdml_getTrainer", k]));
  unknown.forEach((k, i) => state.addresses.set(k, records[i].address));
}

function showError(err) {
  const box = $("error");
  box.hidden = !err;
  box.textContent = err ? `The node did not answer: ${err.message ?? err}` : "";
}

// ------------------------------------------------------------ blocks

function noteTrainer(submission) {
  if (!state.trainers.has(submission.job)) state.trainers.set(submission.job, new Set());
  state.trainers.get(submission.job).add(submission.trainer);
}

function ingest(block) {
  state.blocks.set(block.number, block);
  for (const s of block.body.submissions) noteTrainer(s.submission);
  for (const ev of block.body.evidence) {
    // A rejected unit is in no block's submissions, only in the evidence against it.
    if (ev.submission) noteTrainer(ev.submission.submission);
    state.evidence.push({ height: block.number, ev });
  }
}

async function loadBlocks(head) {
  const lowest = Math.max(1, head - SCANNED_BLOCKS + 1);
  const wanted = [];
  for (let h = lowest; h <= head; h++) if (!state.blocks.has(h)) wanted.push(h);
  if (wanted.length === 0) return;
  const full = await batch(wanted.map((h) => ["tdml_getBlockByNumber", h, true]));
  const withTxs = full.filter((b) => b && b.body.transactions.length > 0);
  // Only the summary names transaction hashes; ask for it where there are any.
  const summaries = await batch(withTxs.map((b) => ["tdml_getBlockByNumber", b.number, false]));
  withTxs.forEach((b, i) => { b.txHashes = summaries[i]?.transactions ?? []; });
  for (const b of full.filter(Boolean).sort((a, b) => a.number - b.number)) ingest(b);
  for (const h of [...state.blocks.keys()]) if (h < lowest) state.blocks.delete(h);
  state.evidence = state.evidence.filter((e) => e.height >= lowest);
}

function renderBlocks() {
  const heights = [...state.blocks.keys()].sort((a, b) => b - a);
  fillRows($("blocks-body"), heights.slice(0, SHOWN_BLOCKS).map((h) => {
    const b = state.blocks.get(h);
    return row(String(h), hashCell(b.hash), String(b.header.round), hashCell(b.header.proposer),
      String(b.body.transactions.length), String(b.body.submissions.length), String(b.body.verdicts.length),
      String(b.body.evidence.length), b.body.outcomes.map((o) => o.step + 1).join(", "));
  }), "no blocks yet");
  const txs = heights.flatMap((h) => {
    const b = state.blocks.get(h);
    return b.body.transactions.map((t, i) => {
      const [kind, what] = readTransaction(t);
      return row(String(h), hashCell(b.txHashes?.[i]), kind, hashCell(t.tx.sender), String(t.tx.nonce), String(t.tx.fee), what);
    });
  });
  fillRows($("txs-body"), txs.slice(0, 50), `no transactions in the last ${SCANNED_BLOCKS} blocks`);
  fillRows($("evidence-body"), state.evidence.slice().reverse().map((e) => evidenceRow(e.height, e.ev, addressOf)),
    `no evidence in the last ${SCANNED_BLOCKS} blocks`);
}

// ------------------------------------------------------------ node, validators, peers, jobs

function renderOverview(info, syncing, validators, peers) {
  $("chain-id").textContent = info.chainId;
  facts($("node-info"), [
    ["node id", short(info.nodeId)], ["address", short(info.address)], ["roles", info.roles.join(", ") || "—"],
    ["validator", info.validator ? "yes" : "no"], ["syncing", syncing ? `${syncing.currentBlock} of ${syncing.highestBlock}` : "no"],
    ["peers", info.peers], ["version", info.version], ["torch", info.torchVersion],
  ]);
  fillRows($("validators-body"), validators.map((v) => row(hashCell(v.address), hashCell(v.publicKey), String(v.power))), "no validators");
  const keys = peers.length ? Object.keys(peers[0]) : ["peer"];
  $("peers-head").replaceChildren(el("tr", {}, ...keys.map((k) => el("th", {}, k))));
  fillRows($("peers-body"), peers.map((p) => row(...keys.map((k) => (String(p[k]).startsWith("0x") ? hashCell(p[k]) : String(p[k]))))),
    "no peers connected");
}

function renderJobs() {
  fillRows($("jobs-body"), state.jobs.map((j) => {
    const tr = row(j.name, hashCell(j.id), j.status, `${j.step} / ${j.steps}`);
    tr.classList.add("clickable");
    if (j.id === state.selected) tr.classList.add("selected");
    tr.addEventListener("click", () => { location.hash = `job=${j.id}`; });
    return tr;
  }), "no jobs yet");
}

// ------------------------------------------------------------ one job

function renderCharts(outcomes) {
  const train = outcomes.filter((o) => o.trainLossFloat != null).map((o) => [o.step + 1, o.trainLossFloat]);
  const test = outcomes.filter((o) => o.evalLossFloat != null).map((o) => [o.step + 1, o.evalLossFloat]);
  const accuracy = outcomes.filter((o) => o.testAccuracy != null).map((o) => [o.step + 1, o.testAccuracy]);
  drawChart($("loss-chart"), [{ name: "train", points: train }, { name: "eval", points: test }]);
  drawChart($("accuracy-chart"), [{ name: "accuracy", points: accuracy }], { yMin: 0, yMax: 1 });
}

// The job's step outcomes, asking only for the steps completed since the last call.
async function loadHistory(id, completed) {
  const cached = state.history.get(id) ?? [];
  const next = cached.length ? cached.at(-1).step + 1 : 0;
  let want = completed - next;
  for (let tries = 0; want > 0; tries++) {
    const fresh = ((await call("tdml_getJobHistory", id, Math.min(want, HISTORY_LIMIT))) ?? []).filter((o) => o.step >= next);
    // The chain may have completed more steps since tdml_getJob: then the latest
    // `want` start past `next`, and asking again for more closes the gap.
    if (fresh.length === 0 || fresh[0].step === next || want >= HISTORY_LIMIT || tries === 4) {
      state.history.set(id, cached.concat(fresh).slice(-HISTORY_LIMIT));
      break;
    }
    want = fresh.at(-1).step + 1 - next;
  }
  return state.history.get(id) ?? [];
}

async function loadJob(id) {
  const job = await call("tdml_getJob", id);
  if (!job) return;
  const history = await loadHistory(id, job.step);
  const keys = new Set([...(state.trainers.get(id) ?? []), ...job.assignment]);
  const records = await batch([...keys].map((k) => ["tdml_getTrainer", k]));
  [...keys].forEach((k, i) => state.addresses.set(k, records[i].address));
  const byAddress = new Map(records.map((r) => [r.address, r]));
  if (state.selected !== id) return; // another job was picked meanwhile
  $("job").hidden = false;
  $("job-name").textContent = job.name;
  $("job-id").textContent = short(job.id);
  $("job-id").title = job.id;
  $("job-progress").textContent = `step ${job.step} of ${job.steps} (${job.status})`;
  $("job-progress-bar").style.width = `${(100 * job.step) / Math.max(1, job.steps)}%`;
  const last = job.lastEval;
  facts($("job-facts"), [
    ["status", job.status], ["submitter", short(job.submitter)], ["created at block", job.createdHeight],
    ["finished at block", job.finishedHeight], ["escrow left", job.escrow],
    ["last train loss", job.lastOutcome?.trainLossFloat?.toFixed(4)],
    ["test accuracy", last ? `${(100 * last.testAccuracy).toFixed(1)}% at step ${last.step + 1}` : null],
    ["model root", short(job.modelRoot)],
  ]);
  facts($("job-spec"), flatten(job.spec));
  renderCharts(history);
  fillRows($("trainers-body"), [...byAddress.values()].map((t) => row(hashCell(t.address), t.roles.join(", "), String(t.unitsDone),
    String(t.unitsVerified), String(t.unitsRejected), String(t.unitsReassigned), String(t.verdictsSigned),
    String(t.falseVerdicts), t.slashed ? `yes (${t.timesSlashed}×)` : `no (${t.timesSlashed}×)`, String(t.rewards))),
  "no trainer has worked on this job in the scanned blocks");
  const mine = state.evidence.filter((e) => e.ev.submission?.submission.job === id);
  fillRows($("job-evidence-body"), mine.slice().reverse().map((e) => evidenceRow(e.height, e.ev, addressOf)),
    `no slashing for this job in the last ${SCANNED_BLOCKS} blocks`);
}

// ------------------------------------------------------------ the refresh loop

async function refresh() {
  const [head, info, syncing, validators, peers, jobs] = await batch([
    ["tdml_blockNumber"], ["tdml_nodeInfo"], ["tdml_syncing"], ["tdml_validators"], ["tdml_peers"], ["tdml_listJobs"],
  ]);
  setHead(head, info.tipHash);
  renderOverview(info, syncing, validators, peers);
  state.jobs = jobs;
  const wanted = new URLSearchParams(location.hash.slice(1)).get("job");
  const active = jobs.find((j) => j.status === "active") ?? jobs[0];
  state.selected = jobs.some((j) => j.id === wanted) ? wanted : (active?.id ?? null);
  renderJobs();
  await loadBlocks(head);
  await resolveAddresses(state.evidence.map((e) => readEvidence(e.ev).offender));
  renderBlocks();
  if (state.selected) await loadJob(state.selected);
}

function setHead(height, hash) {
  if (height < state.head) return;
  state.head = height;
  $("head-height").textContent = String(height);
  if (hash) { $("head-hash").textContent = short(hash); $("head-hash").title = hash; }
}

let running = null, again = false;

function scheduleRefresh() {
  if (running) { again = true; return; }
  running = refresh()
    .then(() => showError(null), showError)
    .finally(() => {
      running = null;
      if (again) { again = false; scheduleRefresh(); }
    });
}

function onBlock(summary) {
  setHead(summary.number, summary.hash);
  scheduleRefresh();
}

function onStatus(live) {
  const badge = $("live");
  badge.textContent = live ? "live" : "reconnecting";
  badge.className = `status ${live ? "on" : "off"}`;
  if (live) scheduleRefresh(); // catch up on whatever was missed while away
}

window.addEventListener("hashchange", scheduleRefresh);
subscribeBlocks(onBlock, onStatus);
scheduleRefresh();
