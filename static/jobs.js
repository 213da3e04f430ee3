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

async function poll(label, jobId, signal) {
  current.jobId = jobId;
  for (;;) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    if (signal.aborted) throw new DOMException("cancelled", "AbortError");
    const job = await get(`/api/jobs/${jobId}`);
    show(`${label}: ${job.message || job.state}`, job.progress ?? null);
    if (job.state === "done") return job.result;
    if (job.state === "failed") throw new Error(job.error || `${label} failed`);
    if (job.state === "cancelled") throw new DOMException("cancelled", "AbortError");
  }
}

// `start(signal)` answers directly or with {job_id} (a 202); the job is then polled with a
// progress bar and a Cancel button. Throws on error or cancel.
export async function track(label, start) {
  const controller = new AbortController();
  current = { controller, jobId: null };
  show(`${label}…`, null);
  try {
    const answer = await start(controller.signal);
    return answer && answer.job_id ? await poll(label, answer.job_id, controller.signal) : answer;
  } finally {
    current = null;
    $("job").hidden = true;
  }
}

// POST `body` to `path` as a tracked request.
export function run(label, path, body) {
  return track(label, (signal) => request("POST", path, body, { signal }));
}
