// Live job progress (server-sent events, else polling), copy buttons and drag-and-drop onto
// file inputs; no framework.
"use strict";

function renderCounts(counts) {
  return Object.entries(counts || {}).map(([k, v]) => `${k} ${v}`).join(", ");
}

const ACTIVE = (status) => status === "queued" || status === "running";

function showJob(element, job) {
  element.dataset.status = job.status;
  for (const node of element.querySelectorAll(".job-status")) node.textContent = job.status;
  for (const node of element.querySelectorAll(".job-done")) node.textContent = job.done;
  for (const node of element.querySelectorAll(".job-counts")) node.textContent = renderCounts(job.counts);
  for (const node of element.querySelectorAll(".job-rate")) node.textContent = job.rate_per_s ? job.rate_per_s.toFixed(1) : "–";
  for (const node of element.querySelectorAll(".job-eta")) node.textContent = job.eta_s != null ? `${Math.round(job.eta_s)} s` : "–";
  for (const bar of element.querySelectorAll("progress")) { bar.max = job.total || 1; bar.value = job.done; }
}

// The latest failures, newest first, as text (paths and names are the uploader's words).
function showFailures(element, failed) {
  for (const list of element.querySelectorAll(".job-latest")) {
    list.replaceChildren(...(failed || []).map((item) => {
      const line = document.createElement("li");
      line.textContent = `${item.path} (${item.subject}): ${item.status}${item.reason ? ` – ${item.reason}` : ""}`;
      return line;
    }));
  }
}

function finished(element) {
  if (element.id === "job" && document.getElementById("failed")) location.reload();  // the full report
}

function pollJob(element) {
  const url = element.dataset.jobUrl;
  if (!url || !ACTIVE(element.dataset.status)) return;
  element.dataset.live = "polling";
  const tick = async () => {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) return;
      const job = await response.json();
      showJob(element, job);
      if (ACTIVE(job.status)) { setTimeout(tick, 1000); } else { finished(element); }
    } catch (error) {
      setTimeout(tick, 3000);
    }
  };
  setTimeout(tick, 1000);
}

// Server-sent events where the page offers them and the browser has them; polling otherwise,
// and whenever the stream is refused (the server's streams are all taken) or fails for good.
function followJob(element) {
  const url = element.dataset.eventsUrl;
  if (!ACTIVE(element.dataset.status)) return;
  if (!url || !window.EventSource) { pollJob(element); return; }
  const source = new EventSource(url);
  element.dataset.live = "events";
  source.addEventListener("progress", (event) => {
    const job = JSON.parse(event.data);
    showJob(element, job);
    showFailures(element, job.failed);
  });
  source.addEventListener("end", () => { source.close(); finished(element); });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) pollJob(element);
  });
}

function copyButton(button) {
  const field = document.getElementById(button.dataset.copy);
  button.addEventListener("click", async () => {
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
      button.textContent = "Copied";
    } catch (error) {
      button.textContent = "Selected: press Ctrl+C";
    }
  });
}

function dropZone(label) {
  const input = label.querySelector("input[type=file]");
  if (!input) return;
  const hint = label.querySelector("span");
  label.addEventListener("dragover", (event) => { event.preventDefault(); label.classList.add("over"); });
  label.addEventListener("dragleave", () => label.classList.remove("over"));
  label.addEventListener("drop", (event) => {
    event.preventDefault();
    label.classList.remove("over");
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      input.dispatchEvent(new Event("change"));
    }
  });
  input.addEventListener("change", () => { if (input.files.length && hint) hint.textContent = input.files[0].name; });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-job-url]").forEach(followJob);
  document.querySelectorAll("button[data-copy]").forEach(copyButton);
  document.querySelectorAll("label.drop").forEach(dropZone);
});
