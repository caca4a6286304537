// NIPGBoard: minimal panel. Lists the runs (datasets) of the logdir and their jobs, starts an ingest
// when there is no dataset yet and a feature extraction per run. TensorBoard loads this module in
// an iframe whose <base href> is "plugin/nipgboard/", so every URL below is relative to the plugin.

const HEADER = { "Content-Type": "application/json", "X-NIPGBoard": "1" };

async function getJSON(url) {
  const res = await fetch(url);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

async function postJSON(url, data) {
  const res = await fetch(url, { method: "POST", headers: HEADER, body: JSON.stringify(data) });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick" || k === "onsubmit") node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function seconds(s) {
  if (s == null) return "";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

const STYLE = `
  body { font: 14px/1.4 Roboto, Helvetica, Arial, sans-serif; margin: 16px; color: #212121; }
  h1 { font-size: 20px; margin: 0 0 12px; }
  h2 { font-size: 16px; margin: 20px 0 8px; }
  table { border-collapse: collapse; }
  td, th { padding: 4px 10px; border-bottom: 1px solid #e0e0e0; text-align: left; }
  progress { width: 160px; }
  .error { color: #c62828; }
  .muted { color: #757575; }
  input[type=text] { width: 360px; }
  form > * { margin: 4px 8px 4px 0; }
`;

export async function render() {
  document.head.append(el("style", {}, STYLE));
  const root = el("div", { id: "nipgboard" });
  document.body.append(root);
  const status = el("p", { class: "error" });
  const runsBox = el("div");
  const jobsBox = el("div");
  root.append(el("h1", {}, "NIPGBoard"), status, runsBox, jobsBox);
  let networks = [];
  try {
    networks = (await getJSON("networks")).networks.filter((n) => n.available);
  } catch (e) {
    status.textContent = e.message;
  }

  function ingestForm(runName) {
    const run = el("input", { type: "text", name: "run", value: runName || "dataset" });
    const images = el("input", { type: "text", name: "images", placeholder: "/absolute/path/to/images" });
    const folders = el("input", { type: "checkbox", name: "folder_labels" });
    return el("form", {
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await postJSON("start_job", {
            run: run.value, kind: "ingest",
            params: { images: images.value, folder_labels: folders.checked },
          });
          status.textContent = "";
          refresh();
        } catch (e) { status.textContent = e.message; }
      },
    }, "Run name ", run, " Images folder ", images, el("label", {}, folders, " class subfolders are labels"),
       el("button", { type: "submit" }, "Ingest"));
  }

  async function startEmbed(run, network) {
    try {
      await postJSON("start_job", { run, kind: "embed", params: { network } });
      refresh();
    } catch (e) { status.textContent = e.message; }
  }

  async function cancel(run, id) {
    try { await postJSON("cancel_job", { run, id }); refresh(); } catch (e) { status.textContent = e.message; }
  }

  function drawRuns(data) {
    runsBox.replaceChildren();
    if (!data.runs.length) {
      runsBox.append(el("p", { class: "muted" }, data.onboarding || "No dataset yet."), ingestForm(""));
      return;
    }
    const table = el("table", {}, el("tr", {}, el("th", {}, "Run"), el("th", {}, "Images"),
      el("th", {}, "Labelled"), el("th", {}, "Active jobs"), el("th", {}, "Extract features")));
    for (const r of data.runs) {
      const select = el("select", {}, ...networks.map((n) => el("option", { value: n.id }, n.name || n.id)));
      const button = el("button", { onclick: () => startEmbed(r.name, select.value) }, "Start");
      table.append(el("tr", {}, el("td", {}, r.name), el("td", {}, r.dataset ? r.images : "(ingesting)"),
        el("td", {}, r.labelled), el("td", {}, r.active_jobs),
        el("td", {}, r.dataset && networks.length ? el("span", {}, select, " ", button) : "")));
    }
    runsBox.append(el("h2", {}, "Runs"), table, el("h2", {}, "Add images"), ingestForm(""));
  }

  function drawJobs(data) {
    jobsBox.replaceChildren(el("h2", {}, "Jobs"));
    if (!data.jobs.length) { jobsBox.append(el("p", { class: "muted" }, "No jobs yet.")); return; }
    const table = el("table", {}, el("tr", {}, el("th", {}, "Run"), el("th", {}, "Job"), el("th", {}, "State"),
      el("th", {}, "Progress"), el("th", {}, "Rate"), el("th", {}, "ETA"), el("th", {}, "")));
    for (const j of data.jobs) {
      const bar = el("progress", { max: j.total || 1, value: j.state === "done" ? (j.total || 1) : j.done || 0 });
      const active = j.state === "queued" || j.state === "running";
      table.append(el("tr", {}, el("td", {}, j.run), el("td", {}, `${j.kind} #${j.id}`),
        el("td", { class: j.state === "failed" ? "error" : "" }, j.state, j.error ? `: ${j.error}` : ""),
        el("td", {}, bar, ` ${j.done || 0}/${j.total ?? "?"} ${j.stage || ""}`),
        el("td", {}, j.rate ? `${j.rate.toFixed(1)}/s` : ""), el("td", {}, seconds(j.eta)),
        el("td", {}, active ? el("button", { onclick: () => cancel(j.run, j.id) }, "Cancel") : "")));
    }
    jobsBox.append(table);
  }

  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    try {
      const [runs, jobs] = await Promise.all([getJSON("runs"), getJSON("jobs?limit=20")]);
      if (!document.activeElement || document.activeElement.tagName !== "INPUT") drawRuns(runs);
      drawJobs(jobs);
      const busy = jobs.jobs.some((j) => j.state === "queued" || j.state === "running");
      timer = setTimeout(refresh, busy ? 1000 : 5000);
    } catch (e) {
      status.textContent = e.message;
      timer = setTimeout(refresh, 5000);
    }
  }
  await refresh();
}
