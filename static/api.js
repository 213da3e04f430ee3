// The REST API client: every request the dashboard makes goes through here.
const TOKEN_KEY = "featuregap.token";

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

// FastAPI answers {"detail": "..."} or {"detail": [{loc, msg}, ...]}.
export function detailText(body, status) {
  const detail = body && typeof body === "object" ? body.detail : body;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).slice(1).join(".") || "request"}: ${d.msg}`).join("; ");
  }
  if (typeof detail === "string" && detail) return detail;
  return `HTTP ${status}`;
}

// A 401 asks the page to open its settings, where the token is entered.
function unauthorized(status) {
  if (status === 401) window.dispatchEvent(new CustomEvent("featuregap:unauthorized"));
}

async function parse(response) {
  if (response.status === 204) return null;
  unauthorized(response.status);
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, detailText(body, response.status));
  return body;
}

export async function request(method, path, body, { signal } = {}) {
  const init = { method, headers: authHeaders(), signal };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `cannot reach the server: ${err.message}`);
  }
  const data = await parse(response);
  return response.status === 202 ? { accepted: true, ...data } : data;
}

export const get = (path, opts) => request("GET", path, undefined, opts);
export const post = (path, body, opts) => request("POST", path, body, opts);
export const patch = (path, body) => request("PATCH", path, body);
export const del = (path) => request("DELETE", path);

// A binary resource (image, thumbnail, export) as a Blob, sent with the token; a JSON
// body makes it a POST (e.g. the server's CSV of a heat map's scores).
export async function blob(path, body) {
  const init = { headers: authHeaders() };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    unauthorized(response.status);
    const type = response.headers.get("content-type") || "";
    const body = type.includes("json") ? await response.json() : await response.text();
    throw new ApiError(response.status, detailText(body, response.status));
  }
  return response.blob();
}

const objectUrls = new Map();
// An object URL for an authenticated image path, cached per path.
export async function imageUrl(path) {
  if (!objectUrls.has(path)) objectUrls.set(path, blob(path).then((b) => URL.createObjectURL(b)));
  try {
    return await objectUrls.get(path);
  } catch (err) {
    objectUrls.delete(path);
    throw err;
  }
}

export function forgetImageUrls(prefix) {
  for (const [path, url] of objectUrls) {
    if (path.startsWith(prefix)) {
      url.then((u) => URL.revokeObjectURL(u)).catch(() => {});
      objectUrls.delete(path);
    }
  }
}

// Multipart upload with progress (fetch has no upload progress; XHR has).
export function upload(path, file, fields, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    const token = getToken();
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
      else {
        unauthorized(xhr.status);
        reject(new ApiError(xhr.status, detailText(xhr.response, xhr.status)));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "upload failed: cannot reach the server"));
    const form = new FormData();
    form.append("file", file);
    for (const [key, value] of Object.entries(fields || {})) if (value) form.append(key, value);
    xhr.send(form);
  });
}

export function download(filename, content, type) {
  const data = content instanceof Blob ? content : new Blob([content], { type });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(data);
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}
