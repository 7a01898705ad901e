// clip-fsar studio page: plain JavaScript over the studio's JSON/SSE API (no build step).
"use strict";
const $ = (id) => document.getElementById(id);
let state = null;
let lastTake = null;

function show(text, ok) {
  const m = $("message");
  m.textContent = text;
  m.className = "message" + (ok ? " ok" : "");
  m.hidden = !text;
  if (ok) setTimeout(() => { if (m.textContent === text) m.hidden = true; }, 4000);
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    show("the studio does not answer: " + e);
    throw e;
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    show(data.error || ("HTTP " + res.status));
    throw new Error(data.error || res.status);
  }
  return data;
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") e.onclick = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

function renderDecision(d) {
  if (!d) return;
  const label = $("label");
  label.textContent = d.label;
  label.className = "label" + (d.label === "unknown" ? " unknown" : "");
  $("score").textContent = "score " + d.score.toFixed(3);
  $("known").textContent = d.known === null || d.known === undefined ? "" : "known " + d.known.toFixed(3);
  for (const li of $("classes").children) li.classList.toggle("current", li.dataset.name === d.label);
  if (d.source_fps !== undefined) {
    $("rates").textContent = `source ${d.source_fps.toFixed(1)} frames/s, page ${d.shown_fps.toFixed(1)} frames/s`;
  }
  const h = $("history");
  const first = h.firstElementChild;
  const at = new Date(d.time * 1000).toLocaleTimeString();
  if (first && first.dataset.label === d.label) {
    const n = Number(first.dataset.n) + 1;
    first.dataset.n = n;
    first.textContent = `${at}  ${d.label}  ${d.score.toFixed(2)}  x${n}`;
  } else {
    const li = el("li", { text: `${at}  ${d.label}  ${d.score.toFixed(2)}  x1` });
    li.dataset.label = d.label;
    li.dataset.n = 1;
    h.prepend(li);
    while (h.children.length > 12) h.lastElementChild.remove();
  }
}

let classesKey = "";
function renderClasses(s) {
  const key = JSON.stringify(s.classes.map((c) => [c.name, c.shots]));
  if (key === classesKey) return;  // unchanged: keep the elements (and what the user is pointing at)
  classesKey = key;
  const ul = $("classes");
  ul.replaceChildren();
  for (const c of s.classes) {
    const what = c.shots ? `${c.shots} shot${c.shots === 1 ? "" : "s"}` : "name only";
    const li = el("li", {},
      el("span", { class: "cname", text: c.name }),
      el("span", { class: "dim", text: what }),
      el("button", { class: "small secondary add-shots", title: "Add the recorded clips as more shots",
                     onclick: () => enroll(c.name, "add"), text: "+ shots" }),
      el("button", { class: "small secondary rename", onclick: () => rename(c.name), text: "rename" }),
      el("button", { class: "small secondary remove", onclick: () => remove(c.name), text: "remove" }));
    li.dataset.name = c.name;
    ul.append(li);
  }
}

let takesKey = "";
function renderTakes(s) {
  lastTake = null;
  for (const t of s.takes) if (t.state === "done") lastTake = t;
  $("record").disabled = s.recording;
  $("cancel").hidden = !s.recording;
  const active = s.takes.find((t) => !["done", "failed"].includes(t.state));
  $("rec-state").textContent = active ? `recording: ${active.state}` : "";
  const key = JSON.stringify(s.takes);
  if (key === takesKey) return;
  takesKey = key;
  const box = $("takes");
  box.replaceChildren();
  for (const t of s.takes) {
    const head = el("div", { class: "dim", text: `take ${t.id}: ${t.state}` + (t.message ? ` (${t.message})` : "") },
      " ", el("button", { class: "small secondary", text: "drop", onclick: () => api("DELETE", `/api/takes/${t.id}`) }));
    box.append(head);
    for (const c of t.clips) {
      box.append(el("div", { class: "clip" },
        el("img", { src: `/api/takes/${t.id}/clips/${c.n}.jpg`, alt: `clip ${c.n + 1}`, title: c.file }),
        el("span", { class: "dim", text: `${c.frames} frames, ${c.seconds.toFixed(2)} s` }),
        el("button", { class: "small secondary discard", text: "discard",
                       onclick: () => api("DELETE", `/api/takes/${t.id}/clips/${c.n}`) })));
    }
  }
}

function render(s) {
  state = s;
  $("bundle").textContent = `${s.bundle}  ·  ${s.source}  ·  ${s.model.backend}`;
  const st = s.source_state;
  const pill = $("source-state");
  pill.textContent = st.state + (st.message ? ": " + st.message : "");
  pill.className = "pill " + st.state;
  if (!$("seconds").value) $("seconds").value = s.model.window_seconds.toFixed(2);
  renderClasses(s);
  renderTakes(s);
  const t = s.threshold;
  const slider = $("threshold");
  if (document.activeElement !== slider) slider.value = t.live;
  $("threshold-value").textContent = Number(t.live).toFixed(2);
  $("threshold-info").textContent = `on ${t.score === "znorm" ? "the open-set score (known)" : "the top score"}; ` +
    (t.bundle === null || t.bundle === undefined ? "the bundle has no fitted threshold" :
      `bundle's: ${Number(t.bundle).toFixed(3)} (false-accept rate ${t.far}, fitted on ${t.fitted_on})`);
  $("refit").disabled = !t.refit_with;
  $("refit").title = t.refit_with ? `refit on the ${t.refit_with === "data" ? "--data split" : "bundle's open-set cohort"}`
    : "needs an open-set cohort in the bundle (clipfsar calibrate-threshold) or --data";
  $("clips-dir").textContent = "clips kept in " + s.clips_dir;
  $("rates").textContent = `source ${st.source_fps.toFixed(1)} frames/s, page ${st.shown_fps.toFixed(1)} frames/s`;
  if (s.last && !shownFirst) { shownFirst = true; renderDecision(s.last); }
}
let shownFirst = false;

async function record() {
  const body = { shots: Number($("shots").value), seconds: Number($("seconds").value),
                 countdown: Number($("countdown").value), pause: Number($("pause").value) };
  await api("POST", "/api/record", body);
  show("");
}

async function enroll(name, mode) {
  name = name === undefined ? $("name").value : name;
  if (!lastTake) { show("record clips first (Record), or use 'Add by name only'"); return; }
  const r = await api("POST", "/api/classes", { name, take: lastTake.id, mode: mode || "new" });
  show(`enrolled '${r.enrolled}': ${r.shots} shot${r.shots === 1 ? "" : "s"}`, true);
  if (!mode) $("name").value = "";
}

async function addByName() {
  const r = await api("POST", "/api/classes", { name: $("name").value });
  show(`added '${r.enrolled}' by its name only (zero-shot)`, true);
  $("name").value = "";
}

async function remove(name) {
  if (!confirm(`Remove '${name}' from the bundle? (its recorded clips stay on disk)`)) return;
  await api("POST", "/api/classes/remove", { name });
  show(`removed '${name}'`, true);
}

async function rename(old) {
  const name = prompt(`New name for '${old}'`, old);
  if (name === null || name === old) return;
  await api("POST", "/api/classes/rename", { old, new: name });
  show(`renamed '${old}' to '${name.trim()}'`, true);
}

let thresholdTimer = null;
function thresholdChanged() {
  $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
  clearTimeout(thresholdTimer);
  thresholdTimer = setTimeout(() => api("POST", "/api/threshold", { value: Number($("threshold").value) }), 150);
}

async function refit() {
  const r = await api("POST", "/api/threshold/refit", { far: Number($("far").value) });
  show(`threshold refit: ${r.threshold.bundle.toFixed(3)} (accepts ${(100 * r.fit.accepted_unknown).toFixed(1)} % ` +
       `of ${r.fit.unknown_clips} clips of other actions), stored in the bundle`, true);
}

function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("state", (e) => render(JSON.parse(e.data)));
  es.addEventListener("decision", (e) => renderDecision(JSON.parse(e.data)));
  es.onopen = () => { if ($("message").textContent.startsWith("lost")) show(""); };
  es.onerror = () => show("lost the connection to the studio; reconnecting ...");
}

function keepLive() {  // the MJPEG stream ends when the studio restarts: open it again
  const img = $("live");
  img.onerror = () => setTimeout(() => { img.src = "/api/live.mjpg?t=" + Date.now(); }, 2000);
}

$("record").onclick = () => record().catch(() => {});
$("cancel").onclick = () => api("POST", "/api/record/cancel").catch(() => {});
$("enroll").onclick = () => enroll().catch(() => {});
$("add-name").onclick = () => addByName().catch(() => {});
$("name").addEventListener("keydown", (e) => { if (e.key === "Enter") enroll().catch(() => {}); });
$("threshold").oninput = thresholdChanged;
$("threshold-reset").onclick = () => api("POST", "/api/threshold", { value: null }).catch(() => {});
$("refit").onclick = () => refit().catch(() => {});
keepLive();
connect();
