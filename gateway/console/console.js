// The SSD Stack console: plain JavaScript on the gateway's REST API.
// The API key lives in sessionStorage only; every request sends it as X-API-Key; a 401 or
// 403 brings the sign-in back. User strings are set as text (textContent), never as HTML.

const KEY_STORE = "ssdstack.apiKey";
const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY_STORE);
  const response = await fetch(path, { ...options, headers: { ...(options.headers || {}), "X-API-Key": key || "" } });
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => ({}));
    signOut(body?.error?.message || "Sign in again.");
    throw new ApiError(response.status, body);
  }
  if (!response.ok) {
    throw new ApiError(response.status, await response.json().catch(() => ({})));
  }
  return options.raw ? response : response.json();
}

const post = (path, body) => api(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
});

function notify(message, isError = false) {
  $("notice").textContent = message;
  $("notice").classList.toggle("error", isError);
}

function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.append(cell instanceof Node ? wrap(cell) : element("td", cell));
  return tr;
}

function wrap(node) {
  const td = document.createElement("td");
  td.append(node);
  return td;
}

function options(select, values, selected) {
  select.replaceChildren(...values.map(([value, label]) => {
    const option = element("option", label, { value });
    option.selected = String(value) === String(selected);
    return option;
  }));
}

const fmt = (value, digits = 3) => (typeof value === "number" ? value.toFixed(digits) : "–");

// Sign in and views ----------------------------------------------------------------------

let current = null;
let timer = null;

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  clearTimeout(timer);
  $("tabs").hidden = true;
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  $("signin").hidden = false;
  notify(message || "", Boolean(message));
  $("api-key").focus();
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("api-key").value.trim());
  $("api-key").value = "";
  try {
    await api("/v1/jobs?limit=1");
  } catch (error) {
    if (!(error instanceof ApiError) || (error.status !== 401 && error.status !== 403)) notify(error.message, true);
    return;
  }
  $("signin").hidden = true;
  $("tabs").hidden = false;
  notify("");
  show("jobs");
});

$("sign-out").addEventListener("click", () => signOut(""));

for (const button of document.querySelectorAll("#tabs button[data-view]")) {
  button.addEventListener("click", () => show(button.dataset.view));
}

const VIEWS = { jobs: refreshJobs, datasets: refreshDatasets, models: refreshModels, detect: refreshDetect,
  workers: refreshWorkers };
const POLLED = new Set(["jobs", "workers"]);

function show(name) {
  current = name;
  for (const button of document.querySelectorAll("#tabs button[data-view]")) {
    if (button.dataset.view === name) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${name}`;
  clearTimeout(timer);
  tick();
}

async function tick() {
  const name = current;
  try {
    await VIEWS[name]();
  } catch (error) {
    if (error.status !== 401 && error.status !== 403) notify(error.message, true);
  }
  if (name === current && POLLED.has(name) && sessionStorage.getItem(KEY_STORE)) {
    timer = setTimeout(tick, POLL_MS);
  }
}

// Jobs ------------------------------------------------------------------------------------

let selectedJob = null;
const stepLosses = new Map(); // job id -> [[global step, loss]] seen while polling

function progressOf(job) {
  const p = job.progress || {};
  if (job.state === "succeeded") return 1;
  if (p.epochs && p.steps_per_epoch) return ((p.epoch - 1) * p.steps_per_epoch + (p.step || 0)) / (p.epochs * p.steps_per_epoch);
  if (p.to_evaluate) return p.evaluated / p.to_evaluate;
  return 0;
}

async function refreshJobs() {
  const { jobs } = await api("/v1/jobs?limit=50");
  $("jobs-table").tBodies[0].replaceChildren(...jobs.map((job) => {
    const tr = row([job.id.slice(0, 8), job.type, element("span", job.state, { class: `state-${job.state}` }),
      job.progress?.stage || job.stage || "", `${Math.round(progressOf(job) * 100)} %`]);
    tr.classList.add("pick");
    tr.tabIndex = 0;
    tr.dataset.job = job.id;
    tr.setAttribute("aria-selected", String(job.id === selectedJob));
    const pick = () => { selectedJob = job.id; refreshJobs(); };
    tr.addEventListener("click", pick);
    tr.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") pick(); });
    return tr;
  }));
  if (selectedJob) await refreshJob(selectedJob);
  if (!$("pipeline-dataset").options.length) await fillPipelineForm();
}

async function refreshJob(id) {
  const [job, logs] = await Promise.all([api(`/v1/jobs/${id}`), api(`/v1/jobs/${id}/logs`)]);
  const p = job.progress || {};
  $("job-detail").hidden = false;
  $("job-title").textContent = `${job.type} job ${job.id}`;
  const where = p.epoch ? `epoch ${p.epoch}/${p.epochs}, step ${p.step}/${p.steps_per_epoch}` : "";
  const loss = typeof p.loss === "number" ? `, loss ${p.loss.toFixed(4)}` : "";
  const error = job.error ? ` — ${job.error.message || JSON.stringify(job.error)}` : "";
  $("job-summary").textContent = `${job.state}, stage ${p.stage || job.stage || "–"} ${where}${loss}${error}`;
  $("job-progress").value = progressOf(job);
  $("job-cancel").hidden = !["queued", "running"].includes(job.state);
  $("job-cancel").dataset.job = job.id;
  if (typeof p.loss === "number" && p.epoch && p.steps_per_epoch) {
    const seen = stepLosses.get(id) || [];
    const step = (p.epoch - 1) * p.steps_per_epoch + p.step;
    if (!seen.length || seen[seen.length - 1][0] !== step) seen.push([step, p.loss]);
    stepLosses.set(id, seen);
  }
  const epochs = (p.epoch_losses || []).map(([epoch, value]) => [epoch * (p.steps_per_epoch || 1), value]);
  drawChart($("loss-chart"), epochs.length ? epochs : stepLosses.get(id) || [], "step");
  drawChart($("map-chart"), (p.eval_history || []).map((entry) => [entry.epoch, entry.map]), "epoch");
  const pre = $("job-logs");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = logs.lines.join("\n");
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

function drawChart(canvas, points, xLabel) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  const pad = 32;
  context.clearRect(0, 0, width, height);
  context.strokeStyle = "#4a5360";
  context.fillStyle = "#1b1f24";
  context.font = "12px system-ui, sans-serif";
  context.strokeRect(pad, 8, width - pad - 8, height - pad - 8);
  if (!points.length) {
    context.fillText("no points yet", pad + 8, height / 2);
    return;
  }
  const xs = points.map((point) => point[0]);
  const ys = points.map((point) => point[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(0, ...ys), Math.max(...ys)];
  const x = (v) => pad + ((v - x0) / (x1 - x0 || 1)) * (width - pad - 8);
  const y = (v) => height - pad - ((v - y0) / (y1 - y0 || 1)) * (height - pad - 16);
  context.strokeStyle = "#0b57a4";
  context.lineWidth = 2;
  context.beginPath();
  points.forEach(([px, py], index) => (index ? context.lineTo(x(px), y(py)) : context.moveTo(x(px), y(py))));
  context.stroke();
  context.fillText(fmt(y1), 2, 16);
  context.fillText(fmt(y0), 2, height - pad);
  context.fillText(`${xLabel} ${x0} – ${x1}`, pad, height - 10);
}

$("job-cancel").addEventListener("click", async (event) => {
  await api(`/v1/jobs/${event.target.dataset.job}`, { method: "DELETE" });
  notify("Cancel requested: the job stops at its next check.");
});

// The API's own schema gives the forms their choices and name rules.
let schema = null;
const apiSchema = async () => (schema ??= await fetch("/openapi.json").then((r) => r.json()));
// A JSON-schema pattern as an HTML pattern attribute: anchored already, and compiled with
// the v flag, where a '-' in a character class needs its backslash.
const htmlPattern = (pattern) => pattern.replace(/^\^|\$$/g, "").replace(/-\]/g, "\\-]");

async function fillPipelineForm() {
  const [{ datasets }, openapi] = await Promise.all([api("/v1/datasets"), apiSchema()]);
  const spec = openapi.components.schemas.PipelineSpec.properties;
  $("pipeline-model").pattern = htmlPattern(spec.model.pattern);
  $("pipeline-model").title = spec.model.description;
  options($("pipeline-dataset"), datasets.filter((d) => (d.state || "ready") === "ready").map((d) => [d.name, d.name]));
  options($("pipeline-architecture"), spec.architecture.enum.map((a) => [a, a]), "ssd_lite_mobilenet_v2");
  options($("pipeline-backend"), spec.backend.enum.map((b) => [b, b]), spec.backend.default);
}

$("pipeline-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    const spec = {
      type: "pipeline", dataset: form.get("dataset"), model: form.get("model"),
      architecture: form.get("architecture"), epochs: Number(form.get("epochs")), backend: form.get("backend"),
    };
    for (const field of ["batch_size", "lr"]) if (form.get(field)) spec[field] = Number(form.get(field));
    const job = await post("/v1/jobs", spec);
    selectedJob = job.id;
    notify(`Pipeline job ${job.id} submitted.`);
    await refreshJobs();
  } catch (error) {
    if (error.status !== 401 && error.status !== 403) notify(error.message, true);
  }
});

// Datasets --------------------------------------------------------------------------------

async function refreshDatasets() {
  const [{ datasets }, openapi] = await Promise.all([api("/v1/datasets"), apiSchema()]);
  const name = openapi.components.schemas.PipelineSpec.properties.dataset;
  $("upload-name").pattern = htmlPattern(name.pattern);
  $("upload-name").title = name.description;
  $("datasets-list").replaceChildren(...datasets.map((dataset) => {
    const box = element("article", undefined, { class: "dataset" });
    box.append(element("h3", dataset.name));
    box.append(element("p", `${dataset.state || "ready"} · ${dataset.format || ""} · ${(dataset.size_bytes / 1e6 || 0).toFixed(1)} MB`));
    const splits = Object.entries(dataset.splits || {}).map(([name, s]) => `${name}: ${s.images} images, ${s.annotations} boxes`);
    if (splits.length) box.append(element("p", splits.join(" · ")));
    if (dataset.label_names) {
      box.append(element("p", "Classes:"));
      const list = element("ul");
      const counts = dataset.class_counts || {};
      list.append(...dataset.label_names.map((name) => element("li", counts[name] !== undefined ? `${name} (${counts[name]})` : name)));
      box.append(list);
    }
    const warnings = dataset.warnings || {};
    if (warnings.count) {
      box.append(element("p", `${warnings.count} warnings:`));
      const list = element("ul");
      list.append(...(warnings.first || []).map((line) => element("li", typeof line === "string" ? line : JSON.stringify(line))));
      box.append(list);
    }
    if (dataset.errors?.length) box.append(element("p", `Refused: ${dataset.errors.join("; ")}`));
    return box;
  }));
}

$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("upload-file").files[0];
  const name = $("upload-name").value;
  const request = new XMLHttpRequest(); // fetch cannot report upload progress
  request.open("POST", `/v1/datasets?name=${encodeURIComponent(name)}&format=${encodeURIComponent($("upload-format").value)}`);
  request.setRequestHeader("X-API-Key", sessionStorage.getItem(KEY_STORE) || "");
  request.setRequestHeader("Content-Type", "application/octet-stream");
  request.upload.addEventListener("progress", (e) => { if (e.lengthComputable) $("upload-progress").value = e.loaded / e.total; });
  request.addEventListener("load", async () => {
    const body = JSON.parse(request.responseText || "{}");
    if (request.status === 401 || request.status === 403) return signOut(body?.error?.message);
    if (request.status >= 400) return notify(body?.error?.message || `HTTP ${request.status}`, true);
    $("upload-progress").value = 1;
    notify(`Uploaded; dataset ${name} is being checked (ingest job ${body.id}).`);
    await waitForJob(body.id);
    const ended = await api(`/v1/jobs/${body.id}`);
    notify(ended.state === "succeeded" ? `Dataset ${name} is ready.` : `Dataset ${name} was refused: ${ended.error?.message}`,
      ended.state !== "succeeded");
    $("pipeline-dataset").replaceChildren();
    if (current === "datasets") await refreshDatasets();
  });
  request.addEventListener("error", () => notify("The upload failed: the gateway is out of reach.", true));
  request.send(file);
});

async function waitForJob(id) {
  for (;;) {
    const job = await api(`/v1/jobs/${id}`);
    if (["succeeded", "failed", "cancelled"].includes(job.state)) return job;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

// Models ----------------------------------------------------------------------------------

let selectedVersion = null;
let versions = [];

async function refreshModels() {
  const { models } = await api("/v1/models");
  const chosen = $("model-select").value || models[0]?.name;
  options($("model-select"), models.map((m) => [m.name, m.deployed ? `${m.name} (serving v${m.deployed})` : m.name]), chosen);
  if (chosen) await refreshVersions(chosen);
}

$("model-select").addEventListener("change", () => { selectedVersion = null; refreshVersions($("model-select").value); });

const coco = (metrics) => metrics?.coco || metrics;

async function refreshVersions(name) {
  const answer = await api(`/v1/models/${encodeURIComponent(name)}/versions`);
  versions = answer.versions;
  const deployed = answer.deployed?.version;
  $("versions-table").tBodies[0].replaceChildren(...versions.map((v) => {
    const tr = row([v.version, v.architecture, fmt(coco(v.metrics?.trained)?.AP), fmt(coco(v.metrics?.served)?.AP),
      Object.keys(v.serving || {}).join(", ") || "not converted",
      v.version === deployed ? `yes (${answer.deployed.precision || "fp32"})` : ""]);
    tr.classList.add("pick");
    tr.tabIndex = 0;
    tr.setAttribute("aria-selected", String(v.version === selectedVersion));
    const pick = () => { selectedVersion = v.version; refreshVersions(name); };
    tr.addEventListener("click", pick);
    tr.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") pick(); });
    return tr;
  }));
  const version = versions.find((v) => v.version === selectedVersion);
  $("version-detail").hidden = !version;
  if (version) await showVersion(name, version);
}

async function showVersion(name, version) {
  $("version-title").textContent = `${name} version ${version.version}`;
  const served = version.metrics?.served;
  $("version-summary").textContent = `trained mAP ${fmt(coco(version.metrics?.trained)?.AP)}, served mAP ` +
    `${fmt(coco(served)?.AP)} (${served?.engine || "not evaluated"}), ${version.labels.length} classes, ` +
    `${version.image_size} px`;
  const precisions = [...new Set(Object.values(version.serving || {}).map((s) => s.precision || "fp32"))];
  options($("deploy-precision"), (precisions.length ? precisions : ["fp32"]).map((p) => [p, p]));
  $("deploy-button").dataset.target = JSON.stringify([name, version.version]);
  $("int8-button").dataset.target = JSON.stringify([name, version.version]);
  $("per-class").tBodies[0].replaceChildren(...(served?.per_class || []).map((c) => row([c.name, fmt(c.AP), fmt(c.AP50), c.ground_truth])));
  const files = Object.values(version.artefacts);
  const curve = files.find((a) => a.file.endsWith("pr_curves.png") && a.file.includes(served?.engine || "onnxruntime")) ||
    files.find((a) => a.file.endsWith("pr_curves.png"));
  $("pr-curve").hidden = !curve;
  if (curve) $("pr-curve").src = await blobUrl(artefactUrl(name, version.version, curve.file));
  $("artefacts").replaceChildren(...files.map((a) => {
    const item = element("li");
    const button = element("button", `Download ${a.file}`, { type: "button" });
    button.addEventListener("click", () => download(artefactUrl(name, version.version, a.file), a.file));
    item.append(button, element("span", ` ${(a.bytes / 1e6).toFixed(2)} MB, sha256 ${a.sha256.slice(0, 12)}…`));
    return item;
  }));
}

const artefactUrl = (name, version, file) =>
  `/v1/models/${encodeURIComponent(name)}/versions/${version}/artefacts/${file.split("/").map(encodeURIComponent).join("/")}`;

async function blobUrl(path) {
  const response = await api(path, { raw: true });
  return URL.createObjectURL(await response.blob());
}

async function download(path, file) {
  const link = element("a", undefined, { href: await blobUrl(path), download: file.split("/").pop() });
  document.body.append(link);
  link.click();
  link.remove();
}

$("deploy-button").addEventListener("click", async (event) => {
  const [name, version] = JSON.parse(event.target.dataset.target);
  try {
    await api(`/v1/models/${encodeURIComponent(name)}/versions/${version}/deploy?precision=${$("deploy-precision").value}`,
      { method: "POST" });
    notify(`${name} version ${version} is deployed.`);
    await refreshVersions(name);
  } catch (error) {
    if (error.status !== 401 && error.status !== 403) notify(error.message, true);
  }
});

$("int8-button").addEventListener("click", async (event) => {
  const [name, version] = JSON.parse(event.target.dataset.target);
  try {
    const job = await post("/v1/jobs", { type: "convert", model: name, version, backend: "onnxruntime", precision: "int8" });
    notify(`INT8 conversion submitted: job ${job.id} (see Jobs).`);
  } catch (error) {
    if (error.status !== 401 && error.status !== 403) notify(error.message, true);
  }
});

// Detect ----------------------------------------------------------------------------------

let answer = null;
let floor = 0;

async function refreshDetect() {
  const { models } = await api("/v1/models");
  const deployed = models.filter((m) => m.deployed);
  options($("detect-model"), deployed.map((m) => [m.name, `${m.name} v${m.deployed}`]), $("detect-model").value);
  if (!deployed.length) notify("No model is deployed yet: run a pipeline, or deploy a version under Models.");
}

async function detect(file) {
  const name = $("detect-model").value;
  if (!name) return notify("No model is deployed yet.", true);
  const body = new FormData();
  body.append("file", file);
  try {
    const [result, manifest] = await Promise.all([
      api(`/v1/detect?model=${encodeURIComponent(name)}`, { method: "POST", body }),
      servedManifest(name),
    ]);
    answer = result;
    floor = manifest.postprocess.score_threshold;
  } catch (error) {
    if (error.status !== 401 && error.status !== 403) notify(error.message, true);
    return;
  }
  const slider = $("score-slider");
  slider.min = String(floor);
  slider.value = String(Math.max(Number(slider.value), floor));
  const image = $("detect-image");
  if (image.src) URL.revokeObjectURL(image.src);
  image.src = URL.createObjectURL(file);
  $("detect-figure").hidden = false;
  drawBoxes();
  notify("");
}

async function servedManifest(name) {
  const { deployed } = await api(`/v1/models/${encodeURIComponent(name)}/versions`);
  return api(`/v1/models/${encodeURIComponent(name)}/versions/${deployed.version}`);
}

function drawBoxes() {
  if (!answer) return;
  const minimum = Number($("score-slider").value);
  $("score-value").textContent = minimum.toFixed(2);
  const shown = answer.detections.filter((d) => d.score >= minimum);
  const stage = $("detect-stage");
  stage.querySelectorAll(".box").forEach((box) => box.remove());
  for (const d of shown) {
    const [x0, y0, x1, y1] = d.box;
    const box = element("div", undefined, { class: "box", "data-label": d.label, "data-score": String(d.score),
      "data-box": JSON.stringify(d.box) });
    box.style.left = `${(100 * x0) / answer.width}%`;
    box.style.top = `${(100 * y0) / answer.height}%`;
    box.style.width = `${(100 * (x1 - x0)) / answer.width}%`;
    box.style.height = `${(100 * (y1 - y0)) / answer.height}%`;
    box.append(element("span", `${d.label} ${d.score.toFixed(2)}`));
    stage.append(box);
  }
  $("detect-caption").textContent = `${answer.model} v${answer.version}: ${shown.length} of ` +
    `${answer.detections.length} detections at score ≥ ${minimum.toFixed(2)} (served threshold ${floor})`;
  $("detections-table").tBodies[0].replaceChildren(...shown.map((d) => row([d.label, d.score.toFixed(3),
    d.box.map((v) => v.toFixed(1)).join(", ")])));
}

$("score-slider").addEventListener("input", drawBoxes);
$("detect-file").addEventListener("change", () => { if ($("detect-file").files[0]) detect($("detect-file").files[0]); });
const zone = $("drop-zone");
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  if (event.dataTransfer.files[0]) detect(event.dataTransfer.files[0]);
});

// Workers ---------------------------------------------------------------------------------

async function refreshWorkers() {
  const { workers } = await api("/v1/backends");
  $("workers-table").tBodies[0].replaceChildren(...workers.map((w) => row([w.worker_id, w.service,
    (w.queues || []).join(", "),
    Object.entries(w.backends || {}).map(([queue, names]) => `${queue}: ${[].concat(names).join(", ")}`).join("; "),
    `${fmt(w.seconds_since_heartbeat, 1)} s`])));
}

// Start -----------------------------------------------------------------------------------

if (sessionStorage.getItem(KEY_STORE)) {
  $("signin").hidden = true;
  $("tabs").hidden = false;
  show("jobs");
} else {
  signOut("");
}
