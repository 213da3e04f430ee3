// Long requests: a 202 answer names a job; poll it with a progress bar and a Cancel button.
import { del, get, request } from "./api.js";
import { $ } from "./ui.js";

const POLL_MS = 300;
let current = null;

function show(text, progress) {
  $("job").hidden = false;
  $("job-text").textContent = text;
  const bar = $("job-progress");
  if (progress === null) bar.removeAttribute("value");
  else bar.value = progress;
}

$("job-cancel").addEventListener("click", async () => {
  if (!current) return;
  current.controller.abort();
  if (current.jobId) await del(`/api/jobs/${current.jobId}`).catch(() => {});
});

// POST `body` to `path`; answers directly or through a job. Throws on error or cancel.
export async function run(label, path, body) {
  const controller = new AbortController();
  current = { controller, jobId: null };
  show(`${label}…`, null);
  try {
    let answer = await request("POST", path, body, { signal: controller.signal });
    if (answer && answer.accepted && answer.job_id) {
      current.jobId = answer.job_id;
      for (;;) {
        await new Promise((r) => setTimeout(r, POLL_MS));
        if (controller.signal.aborted) throw new DOMException("cancelled", "AbortError");
        const job = await get(`/api/jobs/${answer.job_id}`);
        show(`${label}: ${job.message || job.state}`, job.progress ?? null);
        if (job.state === "done") { answer = job.result; break; }
        if (job.state === "failed") throw new Error(job.error || `${label} failed`);
        if (job.state === "cancelled") throw new DOMException("cancelled", "AbortError");
      }
    }
    return answer;
  } finally {
    current = null;
    $("job").hidden = true;
  }
}
