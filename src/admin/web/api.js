// The admin API client: the one place that reads the admin token and calls fetch.
//
// The token lives in sessionStorage only and travels only in the Authorization header
// of same-origin calls: never in a URL, a log or the DOM.

export const TOKEN_KEY = 'keygate.admin-token';

export const token = () => sessionStorage.getItem(TOKEN_KEY);
export const setToken = (t) => sessionStorage.setItem(TOKEN_KEY, t);
export const clearToken = () => sessionStorage.removeItem(TOKEN_KEY);

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
  describe() {
    const where = this.field ? ' (field: ' + this.field + ')' : '';
    const status = this.status ? this.status + ' ' : '';
    return status + this.code + ': ' + this.message + where;
  }
}

// Called with the ApiError when a signed-in call is refused with 401.
let unauthorized = () => {};
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** One call; resolves to the response text, or throws an ApiError. */
async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = method === 'PATCH' ? 'application/merge-patch+json' : 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await window.fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network_error', 'the admin API could not be reached (' + e.message + ')');
  }
  const text = await res.text();
  if (!res.ok) {
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    const err = (data && data.error) || {};
    const e = new ApiError(res.status, err.code || 'http_' + res.status, err.message || res.statusText || 'request failed', err.field);
    if (res.status === 401 && token()) unauthorized(e);
    throw e;
  }
  return text;
}

/** A JSON call: the parsed answer (null when empty). */
export async function api(method, path, body) {
  const text = await call(method, path, body);
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch (_) {
    return null;
  }
}

/** Saves the answer of a GET as a file named `filename`; returns its text. */
export async function download(path, filename, type) {
  const text = await call('GET', path);
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  // The browser has started the download by now; the URL is not needed after it.
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return text;
}
