// Live job progress (polling) and drag-and-drop onto file inputs; no framework.
"use strict";

function renderCounts(counts) {
  return Object.entries(counts || {}).map(([k, v]) => `${k} ${v}`).join(", ");
}

function pollJob(element) {
  const url = element.dataset.jobUrl;
  const active = (status) => status === "queued" || status === "running";
  if (!url || !active(element.dataset.status)) return;
  const tick = async () => {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) return;
      const job = await response.json();
      element.dataset.status = job.status;
      for (const node of element.querySelectorAll(".job-status")) node.textContent = job.status;
      for (const node of element.querySelectorAll(".job-done")) node.textContent = job.done;
      for (const node of element.querySelectorAll(".job-counts")) node.textContent = renderCounts(job.counts);
      for (const node of element.querySelectorAll(".job-rate")) node.textContent = job.rate_per_s ? job.rate_per_s.toFixed(1) : "–";
      for (const node of element.querySelectorAll(".job-eta")) node.textContent = job.eta_s != null ? `${Math.round(job.eta_s)} s` : "–";
      for (const bar of element.querySelectorAll("progress")) { bar.max = job.total || 1; bar.value = job.done; }
      if (active(job.status)) { setTimeout(tick, 1000); } else if (document.getElementById("failed")) { location.reload(); }
    } catch (error) {
      setTimeout(tick, 3000);
    }
  };
  setTimeout(tick, 1000);
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
  document.querySelectorAll("[data-job-url]").forEach(pollJob);
  document.querySelectorAll("label.drop").forEach(dropZone);
});
