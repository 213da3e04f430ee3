// Long requests: a 202 answer names a job; poll it with a progress bar and a Cancel button.
// Every call gets its own handle and its own row in a job tray, so overlapping runs never
// share (or clear) each other's state, and each Cancel stops only its own run. A tray sits
// in the page's flow under the buttons that start its calls, so it never covers them.
import { del, get, request } from "./api.js";

const POLL_MS = 300;
const FINISHED = new Set(["done", "failed", "cancelled", "interrupted"]);
// After Cancel, how long to wait for the server to confirm the stop (a job stops within a
// second or so, a Score-CAM batch on a loaded machine takes a few) before giving the
// buttons back anyway.
const STOP_WAIT_MS = 5000;
let tray = null;

// The element that holds one row per running call; main.js hands it the page's job tray.
export function initJobs(root) {
  tray = root;
}

class JobHandle {
  constructor(label, where) {
    this.label = label;
    this.controller = new AbortController();
    this.jobId = null;
    this.text = Object.assign(document.createElement("span"), { className: "job-text" });
    this.bar = document.createElement("progress");
    this.bar.max = 1;
    this.bar.setAttribute("aria-label", label);
    const cancel = Object.assign(document.createElement("button"), { type: "button", className: "job-cancel", textContent: "Cancel" });
    cancel.addEventListener("click", () => { cancel.disabled = true; this.cancel(); });
    this.row = Object.assign(document.createElement("div"), { className: "job-row" });
    this.row.append(this.text, this.bar, cancel);
    this.tray = where || tray;
    this.tray.append(this.row);
    this.tray.hidden = false;
  }

  show(text, progress) {
    this.text.textContent = text;
    if (progress === null) this.bar.removeAttribute("value");
    else this.bar.value = progress;
  }

  async cancel() {
    this.controller.abort();
    if (this.jobId) await del(`/api/jobs/${this.jobId}`).catch(() => {});
  }

  // Poll until the job ends. After Cancel the call goes on until the server has stopped the
  // job (its state "cancelled", or any final state), so the buttons it holds stay disabled
  // while its work still runs.
  async poll(jobId) {
    this.jobId = jobId;
    const signal = this.controller.signal;
    let stopAsked = null;
    for (;;) {
      await new Promise((r) => setTimeout(r, POLL_MS));
      if (signal.aborted) {
        stopAsked ??= Date.now();
        const job = await get(`/api/jobs/${jobId}`).catch(() => null);
        const ended = job === null || FINISHED.has(job.state) || Date.now() - stopAsked > STOP_WAIT_MS;
        this.show(`${this.label}: ${job && job.state === "cancelled" ? "cancelled" : "cancelling…"}`, job?.progress ?? null);
        if (ended) throw new DOMException("cancelled", "AbortError");
        continue;
      }
      const job = await get(`/api/jobs/${jobId}`);
      this.show(`${this.label}: ${job.message || job.state}`, job.progress ?? null);
      if (job.state === "done") return job.result;
      if (job.state === "failed") throw new Error(job.error || `${this.label} failed`);
      if (job.state === "cancelled") throw new DOMException("cancelled", "AbortError");
      // any other end (a job "interrupted" by a server restart) ends the wait too
      if (FINISHED.has(job.state)) throw new Error(job.error || `${this.label} ${job.state}`);
    }
  }

  close() {
    this.row.remove();
    this.tray.hidden = this.tray.children.length === 0;
  }
}

// `start(signal)` answers directly or with {job_id} (a 202); the job is then polled with a
// progress bar and a Cancel button of its own (Cancel also aborts a direct answer still on its
// way). `where`: the tray for its row (default: the page's). Throws on error or cancel.
export async function track(label, start, where) {
  const handle = new JobHandle(label, where);
  handle.show(`${label}…`, null);
  try {
    const answer = await start(handle.controller.signal);
    return answer && answer.job_id ? await handle.poll(answer.job_id) : answer;
  } finally {
    handle.close();
  }
}

// POST `body` to `path` as a tracked request.
export function run(label, path, body, where) {
  return track(label, (signal) => request("POST", path, body, { signal }), where);
}
