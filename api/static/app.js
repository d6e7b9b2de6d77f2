// The dashboard: a job list, a job page with live charts, events and samples, and a submit page.
// Plain JavaScript over the public API (/v1/...); uPlot draws the charts, js-yaml reads YAML specs.
"use strict";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
// The charts of a job page, in order; every `rewards/<name>/mean` TRL logs is added after `kl`.
const CHART_KEYS = ["reward", "reward_std", "kl", "completions/mean_length", "loss", "learning_rate"];
const OVERVIEW_POINTS = 1000;
const EXAMPLE_SPEC = {
  name: "length reward on the tiny model",
  model: "./grpo-data/tiny-model",
  metadata: { team: "research" },
  train_dataset: { rows: [{ prompt: "What is 2+2?" }, { prompt: "Name a colour." }] },
  reward_funcs: [{ type: "builtin", name: "length", params: { ideal_length: 10 } }],
  args: { max_steps: 40, num_generations: 4, per_device_train_batch_size: 4, beta: 0.04, logging_steps: 1 },
};

// --- small helpers --------------------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// The page is signed in by its session cookie (HttpOnly); a change also sends the CSRF token, which the page reads
// from a cookie of its own (a page of another site can read neither).
function csrfToken() {
  const found = document.cookie.split("; ").find((item) => item.startsWith("grpo_csrf="));
  return found ? decodeURIComponent(found.slice("grpo_csrf=".length)) : "";
}

async function api(path, options) {
  const method = (options?.method || "GET").toUpperCase();
  const headers = { ...(options?.headers || {}) };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (response.status === 401) window.location.assign("/");  // signed out (revoked key): the sign-in page
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new Error(body?.error?.message || `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.errors = body?.error?.errors || [];
    throw error;
  }
  return body;
}

function formatNumber(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e5)) return Number(value.toPrecision(4)).toExponential();
  return Number(value.toPrecision(4)).toString();
}

function age(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h ago`;
  return `${Math.round(seconds / 86400)}d ago`;
}

function statusBadge(status) {
  return el("span", { class: `status ${status}`, "data-status": status }, status);
}

function sparkline(values, width = 120, height = 24) {
  const points = values.filter((v) => typeof v === "number");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("class", "spark");
  svg.dataset.points = String(points.length);
  if (points.length < 2) return svg;
  const low = Math.min(...points), high = Math.max(...points), span = high - low || 1;
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.map((v, i) =>
    `${(i / (points.length - 1)) * (width - 2) + 1},${height - 1 - ((v - low) / span) * (height - 2)}`).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#3457d5");
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  return svg;
}

function messageText(m) {
  // One turn of a conversation: who said it (a tool's result names the tool), what, and the tools it called.
  const who = m.role === "tool" ? `tool ${m.name ?? ""}`.trim() : m.role;
  const content = typeof m.content === "string" ? m.content : JSON.stringify(m.content ?? "");
  const calls = (m.tool_calls || []).map((call) =>
    `  -> ${call.function?.name ?? "?"}(${JSON.stringify(call.function?.arguments ?? {})})`);
  return [`${who}: ${content}`, ...calls].join("\n");
}

function text(value) {
  // A prompt or completion: a string, or chat messages (an agent's whole conversation, tool calls included).
  if (typeof value === "string") return value;
  if (Array.isArray(value)) return value.map(messageText).join("\n");
  return JSON.stringify(value);
}

// Pages register what must stop when the user leaves them (streams, timers, charts).
let cleanups = [];
function onLeave(fn) { cleanups.push(fn); }
function leave() { cleanups.forEach((fn) => fn()); cleanups = []; }

// --- the job list ---------------------------------------------------------------------------------------------

async function renderJobs(params) {
  const app = document.getElementById("app");
  const status = params.get("status") || "";
  const metadata = params.get("metadata") || "";
  const statusSelect = el("select", { id: "filter-status" },
    ["", "queued", "running", "paused", "succeeded", "failed", "cancelled"].map((s) =>
      el("option", { value: s, selected: s === status }, s || "any status")));
  const metadataInput = el("input", { id: "filter-metadata", placeholder: "label, e.g. team=research", value: metadata });
  const apply = () => {
    const query = new URLSearchParams();
    if (statusSelect.value) query.set("status", statusSelect.value);
    if (metadataInput.value.trim()) query.set("metadata", metadataInput.value.trim());
    location.hash = `#/?${query}`;
  };
  statusSelect.addEventListener("change", apply);
  metadataInput.addEventListener("keydown", (e) => { if (e.key === "Enter") apply(); });
  const body = el("tbody", { id: "job-rows" });
  app.replaceChildren(
    el("h1", {}, "Jobs"),
    el("div", { class: "filters" }, statusSelect, metadataInput, el("button", { onclick: apply }, "Filter")),
    el("table", { id: "jobs" },
      el("thead", {}, el("tr", {}, ["Job", "Status", "Created", "Step", "Reward", "", "Labels"].map((h) => el("th", {}, h)))),
      body),
  );
  const query = new URLSearchParams({ limit: "50" });
  if (status) query.set("status", status);
  for (const label of metadata.split(",").map((s) => s.trim()).filter(Boolean)) query.append("metadata", label);
  const refresh = async () => {
    let page;
    try {
      page = await api(`/v1/jobs?${query}`);
    } catch (error) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "error-box" }, error.message)));
      return;
    }
    if (!page.data.length) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "No jobs yet: submit one.")));
      return;
    }
    const rows = page.data.map((job) => {
      const spark = el("td", { class: "spark-cell" });
      api(`/v1/jobs/${job.id}/series?keys=reward&max_points=40`)
        .then((series) => spark.append(sparkline(series.values.reward || [])))
        .catch(() => {});
      const labels = Object.entries(job.metadata || {}).map(([k, v]) => el("span", { class: "chip" }, `${k}=${v}`));
      return el("tr", { class: "job-row", "data-job": job.id, onclick: () => { location.hash = `#/jobs/${job.id}`; } },
        el("td", {}, el("a", { href: `#/jobs/${job.id}` }, job.name || job.id), el("div", { class: "muted" }, job.id)),
        el("td", {}, statusBadge(job.status)),
        el("td", { title: job.created_at }, age(job.created_at)),
        el("td", {}, job.latest_step === null ? "–" : `${job.latest_step}${job.total_steps ? ` / ${job.total_steps}` : ""}`),
        el("td", {}, formatNumber(job.latest_metrics?.reward)),
        spark,
        el("td", {}, labels));
    });
    body.replaceChildren(...rows);
  };
  await refresh();
  const timer = setInterval(refresh, 3000);
  onLeave(() => clearInterval(timer));
}

// --- a job's page ---------------------------------------------------------------------------------------------

function chartKeys(metrics) {
  const keys = Object.keys(metrics || {});
  const rewardMeans = keys.filter((k) => /^rewards\/.+\/mean$/.test(k)).sort();
  const ordered = [...CHART_KEYS.slice(0, 3), ...rewardMeans, ...CHART_KEYS.slice(3)];
  return ordered.filter((k) => keys.includes(k));
}

class MetricChart {
  // One uPlot chart of one metric: the job's whole run downsampled by the server, full resolution on zoom.
  constructor(jobId, key, container) {
    this.jobId = jobId;
    this.key = key;
    this.zoomed = false;
    this.steps = [];
    this.values = [];
    this.coveredTo = -1;
    this.box = el("div", { class: "chart", "data-key": key, "data-points": "0", "data-resolution": "loading" });
    const reset = el("button", { title: "back to the whole run", onclick: () => this.loadOverview() }, "reset zoom");
    const plotArea = el("div");
    this.box.append(el("div", { class: "chart-head" }, el("span", {}, key), reset), plotArea);
    container.append(this.box);
    const width = Math.max(360, this.box.clientWidth - 20);
    this.plot = new uPlot({
      width, height: 200,
      scales: { x: { time: false } },
      series: [{ label: "step" }, { label: key, stroke: "#3457d5", width: 1.5, spanGaps: true }],
      axes: [{}, { size: 70, values: (u, ticks) => ticks.map(formatNumber) }],
      legend: { live: true },
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 5) return;
          const from = Math.floor(u.posToVal(u.select.left, "x"));
          const to = Math.ceil(u.posToVal(u.select.left + u.select.width, "x"));
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          this.loadRange(from, to);
        }],
      },
      cursor: { drag: { x: true, y: false, setScale: false } },
    }, [[], []], plotArea);
    plotArea.addEventListener("dblclick", () => this.loadOverview());
  }

  show(steps, values, resolution, coveredTo) {
    // Copies: charts fed from one series response must not share (and so grow) each other's arrays.
    this.steps = [...steps];
    this.values = [...values];
    // The newest step the data stands for (a downsampled point stands for the steps up to the next one).
    this.coveredTo = coveredTo ?? steps.at(-1) ?? -1;
    this.plot.setData([steps, values]);
    this.box.dataset.points = String(steps.length);
    this.box.dataset.resolution = resolution;
  }

  async loadOverview() {
    this.zoomed = false;
    const series = await api(`/v1/jobs/${this.jobId}/series?keys=${encodeURIComponent(this.key)}&max_points=${OVERVIEW_POINTS}`);
    this.show(series.steps, series.values[this.key] || [], series.downsampled ? "overview" : "full", series.to_step);
  }

  async loadRange(from, to) {
    this.zoomed = true;
    const series = await api(`/v1/jobs/${this.jobId}/series?keys=${encodeURIComponent(this.key)}` +
      `&max_points=${OVERVIEW_POINTS}&from_step=${from}&to_step=${to}`);
    this.show(series.steps, series.values[this.key] || [], series.downsampled ? "zoomed-overview" : "full");
  }

  append(step, value) {
    if (this.zoomed || step <= this.coveredTo) return;
    this.steps.push(step);
    this.values.push(typeof value === "number" ? value : null);
    this.show(this.steps, this.values, this.box.dataset.resolution, step);
    // Live points are added one by one: when they outgrow the overview, let the server downsample again.
    if (this.steps.length > 2 * OVERVIEW_POINTS) this.loadOverview();
  }

  rewind(step) {
    const keep = this.steps.findIndex((s) => s > step);
    if (keep >= 0) this.show(this.steps.slice(0, keep), this.values.slice(0, keep), this.box.dataset.resolution, step);
  }

  destroy() { this.plot.destroy(); }
}

function renderHeader(job, head) {
  const progress = job.total_steps && job.latest_step ? Math.min(100, (100 * job.latest_step) / job.total_steps) : 0;
  const cancel = el("button", {
    class: "danger", id: "cancel-job", disabled: TERMINAL.has(job.status),
    onclick: async () => {
      if (!confirm(`Cancel ${job.id}?`)) return;
      try {
        renderHeader(await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" }), head);
      } catch (error) {
        alert(error.message);
      }
    },
  }, "Cancel");
  const labels = Object.entries(job.metadata || {}).map(([k, v]) => el("span", { class: "chip" }, `${k}=${v}`));
  head.replaceChildren(
    el("div", {},
      el("h1", {}, job.name || job.id, " ", statusBadge(job.status)),
      el("div", { class: "facts" },
        el("span", {}, "id ", el("b", {}, job.id)),
        el("span", {}, "model ", el("b", {}, job.model)),
        el("span", { id: "job-step" }, "step ", el("b", {}, `${job.latest_step ?? 0}${job.total_steps ? ` / ${job.total_steps}` : ""}`)),
        el("span", {}, "attempt ", el("b", {}, job.attempt)),
        el("span", { title: job.created_at }, "created ", el("b", {}, age(job.created_at))),
        labels.length ? el("span", {}, labels) : null),
      el("div", { class: "progress" }, el("div", { style: `width:${progress}%` })),
      job.error ? el("div", { class: "error-box", id: "job-error" }, job.error) : null,
      job.status_reason ? el("div", { class: "facts", id: "job-waiting" }, "waiting: ", el("b", {}, job.status_reason)) : null),
    el("div", { class: "actions" },
      cancel,
      el("button", { id: "clone-job", onclick: () => { location.hash = `#/submit?from=${job.id}`; } }, "Clone and edit"),
      el("a", { href: `/v1/jobs/${job.id}/metrics/export?format=csv`, download: true }, el("button", {}, "CSV")),
      el("a", { href: `/v1/jobs/${job.id}/metrics/export?format=jsonl`, download: true }, el("button", {}, "JSONL"))),
  );
}

function eventItem(event) {
  const traceback = event.data?.traceback;
  return el("li", { "data-event": event.id },
    el("time", { datetime: event.created_at }, new Date(event.created_at).toLocaleTimeString()),
    el("span", { class: `kind ${event.kind}` }, event.kind),
    event.message,
    traceback ? el("details", {}, el("summary", {}, "traceback"), el("pre", {}, traceback)) : null);
}

async function renderSamples(jobId, panel, wanted) {
  const page = await api(`/v1/jobs/${jobId}/samples?${wanted === null ? "latest=true" : `step=${wanted}`}&limit=100`);
  const step = page.data.length ? page.data[0].step : wanted;
  const stepInput = el("input", { type: "number", id: "sample-step", value: step ?? "", min: 0, style: "width:90px" });
  const go = (s) => renderSamples(jobId, panel, s);
  stepInput.addEventListener("change", () => go(Number(stepInput.value)));
  const rewardNames = [...new Set(page.data.flatMap((s) => Object.keys(s.rewards || {})))];
  const table = el("table", { id: "samples" },
    el("thead", {}, el("tr", {}, ["#", "Prompt", "Completion", ...rewardNames, "Advantage"].map((h) => el("th", {}, h)))),
    el("tbody", {}, page.data.map((s) => el("tr", { class: "sample-row" },
      el("td", {}, s.index),
      el("td", {}, el("div", { class: "sample-text" }, text(s.prompt))),
      el("td", {}, el("div", { class: "sample-text" }, text(s.completion))),
      rewardNames.map((name) => el("td", {}, formatNumber(s.rewards?.[name]))),
      el("td", {}, formatNumber(s.advantage))))));
  panel.replaceChildren(
    el("div", { class: "samples-controls" },
      el("span", {}, "step"), stepInput,
      el("button", { onclick: () => go(Math.max(0, (step ?? 1) - 1)) }, "previous"),
      el("button", { onclick: () => go((step ?? 0) + 1) }, "next"),
      el("button", { onclick: () => go(null) }, "latest")),
    page.data.length ? table : el("div", { class: "empty" },
      step === null || step === undefined ? "No samples yet." : `No samples kept for step ${step}.`));
}

async function renderJob(jobId) {
  const app = document.getElementById("app");
  const head = el("div", { class: "job-head", id: "job-head" });
  const panels = {
    charts: el("div", { class: "charts", id: "charts" }),
    events: el("ul", { class: "events", id: "events" }),
    samples: el("div", { id: "samples-panel" }),
    spec: el("pre", { id: "spec-view" }),
  };
  const tabBar = el("div", { class: "tabs" });
  const show = (name) => {
    for (const [key, panel] of Object.entries(panels)) panel.hidden = key !== name;
    for (const button of tabBar.children) button.classList.toggle("active", button.dataset.tab === name);
    if (name === "samples") renderSamples(jobId, panels.samples, null).catch((e) => panels.samples.replaceChildren(e.message));
  };
  for (const [name, label] of [["charts", "Charts"], ["events", "Events"], ["samples", "Samples"], ["spec", "Spec"]]) {
    tabBar.append(el("button", { "data-tab": name, id: `tab-${name}`, onclick: () => show(name) }, label));
  }
  app.replaceChildren(head, tabBar, ...Object.values(panels));
  let job;
  try {
    job = await api(`/v1/jobs/${jobId}`);
  } catch (error) {
    app.replaceChildren(el("div", { class: "error-box" }, error.message));
    return;
  }
  renderHeader(job, head);
  panels.spec.textContent = JSON.stringify(job.spec, null, 2);
  show("charts");

  const charts = new Map();
  const ensureCharts = async (metrics) => {
    const added = chartKeys(metrics).filter((key) => !charts.has(key));
    if (!added.length) return;
    for (const key of added) charts.set(key, new MetricChart(jobId, key, panels.charts));
    // One request for every new chart's overview: the database reads the job's points once.
    const keys = added.map(encodeURIComponent).join(",");
    const series = await api(`/v1/jobs/${jobId}/series?keys=${keys}&max_points=${OVERVIEW_POINTS}`);
    for (const key of added) {
      charts.get(key).show(series.steps, series.values[key] || [], series.downsampled ? "overview" : "full", series.to_step);
    }
  };
  onLeave(() => charts.forEach((chart) => chart.destroy()));
  if (job.latest_metrics) await ensureCharts(job.latest_metrics);
  else panels.charts.append(el("div", { class: "empty", id: "no-metrics" }, "Waiting for the first logged step..."));

  // Metrics from the newest step the charts hold (the overview has the rest); events from the start.
  const shownStep = Math.max(-1, ...[...charts.values()].map((chart) => chart.coveredTo));
  const stream = new EventSource(`/v1/jobs/${jobId}/stream?after=${job.attempt}.${shownStep}.0`);
  onLeave(() => stream.close());
  stream.addEventListener("metric", async (message) => {
    const point = JSON.parse(message.data);
    document.getElementById("no-metrics")?.remove();
    await ensureCharts(point.metrics);
    for (const [key, chart] of charts) chart.append(point.step, point.metrics[key]);
  });
  stream.addEventListener("rewind", (message) => {
    const { step } = JSON.parse(message.data);
    charts.forEach((chart) => chart.rewind(step));
  });
  stream.addEventListener("status", (message) => renderHeader(JSON.parse(message.data), head));
  stream.addEventListener("event", (message) => panels.events.prepend(eventItem(JSON.parse(message.data))));
  stream.addEventListener("end", (message) => {
    renderHeader(JSON.parse(message.data), head);
    stream.close();
    document.body.dataset.streamEnded = "true";
  });
}

// --- submitting -----------------------------------------------------------------------------------------------

function parseSpec(source) {
  const trimmed = source.trim();
  if (!trimmed) throw new Error("the spec is empty");
  if (trimmed.startsWith("{")) return JSON.parse(trimmed);
  return jsyaml.load(trimmed);
}

function flatten(value, path, out) {
  // Every field of the spec under the name the API's errors use: args.beta, reward_funcs[0].source
  if (Array.isArray(value) && value.length) {
    value.forEach((item, i) => flatten(item, `${path}[${i}]`, out));
  } else if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
    for (const [key, item] of Object.entries(value)) flatten(item, path ? `${path}.${key}` : key, out);
  } else {
    out.push([path, value]);
  }
  return out;
}

function renderFieldErrors(spec, errors, container) {
  const fields = flatten(spec, "", []);
  const claimed = new Set();
  const rows = fields.map(([path, value]) => {
    const mine = errors.filter((e) => e.field === path || (e.field && path.startsWith(`${e.field}.`) && !claimed.has(e)));
    mine.forEach((e) => claimed.add(e));
    const shown = typeof value === "string" && value.length > 80 ? `${value.slice(0, 80)}…` : JSON.stringify(value);
    return el("div", { class: `field${mine.length ? " has-error" : ""}`, "data-field": path },
      el("span", { class: "path" }, `${path}: `), shown,
      mine.map((e) => el("div", { class: "field-error" }, e.message)));
  });
  // Problems with fields the spec does not have (a missing `model`, say) are shown where they would go.
  for (const error of errors.filter((e) => !claimed.has(e))) {
    rows.push(el("div", { class: "field has-error", "data-field": error.field || "(spec)" },
      el("span", { class: "path" }, `${error.field || "(spec)"}: `), "(missing)",
      el("div", { class: "field-error" }, error.message)));
  }
  container.replaceChildren(el("h2", {}, `${errors.length} problem${errors.length === 1 ? "" : "s"}`), ...rows);
}

async function renderSubmit(params) {
  const app = document.getElementById("app");
  const textarea = el("textarea", { id: "spec", spellcheck: "false" });
  const result = el("div", { class: "fields", id: "validation" });
  const from = params.get("from");
  if (from) {
    try {
      const job = await api(`/v1/jobs/${from}`);
      const spec = { ...job.spec, name: `${job.spec.name || job.id} (clone)` };
      textarea.value = JSON.stringify(spec, null, 2);
    } catch (error) {
      result.replaceChildren(el("div", { class: "error-box" }, error.message));
    }
  } else {
    textarea.value = JSON.stringify(EXAMPLE_SPEC, null, 2);
  }
  const submit = el("button", { class: "primary", id: "submit-spec" }, "Submit");
  submit.addEventListener("click", async () => {
    let spec;
    try {
      spec = parseSpec(textarea.value);
    } catch (error) {
      result.replaceChildren(el("div", { class: "error-box", id: "parse-error" }, `Not valid JSON or YAML: ${error.message}`));
      return;
    }
    submit.disabled = true;
    try {
      const job = await api("/v1/jobs", {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(spec),
      });
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      if (error.status === 422 && error.errors.length) renderFieldErrors(spec, error.errors, result);
      else result.replaceChildren(el("div", { class: "error-box" }, error.message));
    } finally {
      submit.disabled = false;
    }
  });
  app.replaceChildren(
    el("h1", {}, from ? `Clone ${from}` : "Submit a job"),
    el("p", { class: "muted" }, "A job spec in JSON or YAML: GRPOTrainer's arguments (see ",
      el("a", { href: "/docs#/jobs/create_job_v1_jobs_post" }, "the API docs"), ")."),
    el("div", { class: "submit-grid" },
      el("div", {}, textarea, el("div", { style: "margin-top:8px" }, submit)),
      result),
  );
}

// --- routing --------------------------------------------------------------------------------------------------

async function route() {
  leave();
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const job = path.match(/^\/jobs\/([^/]+)$/);
  document.body.dataset.page = job ? "job" : path === "/submit" ? "submit" : "jobs";
  if (job) await renderJob(decodeURIComponent(job[1]));
  else if (path === "/submit") await renderSubmit(params);
  else await renderJobs(params);
}

window.addEventListener("hashchange", route);
route();
