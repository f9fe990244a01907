// The REST API client: JSON in and out, the session cookie, and the CSRF header.

export const API = '/api/v1';

let csrfToken = null;
let unauthorizedHandler = null;

export function setCsrfToken(token) {
  csrfToken = token || null;
}

/** Called (once per request) when the API answers 401 outside /auth/: the session ended. */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

/** An API error: the problem+json fields, ready to show. */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    const p = problem || {};
    let errors = Array.isArray(p.errors) ? p.errors : [];
    let detail = p.detail;
    // FastAPI's own validation shape ({detail: [{loc, msg}]}), should it ever come through.
    if (Array.isArray(detail)) {
      errors = detail.map((e) => ({
        field: (e.loc || []).filter((part) => part !== 'body').join('.'),
        message: e.msg || String(e),
      }));
      detail = 'Some fields need attention.';
    }
    if (!detail) {
      detail = p.title || defaultMessage(status);
    }
    if (status === 429 && retryAfter && !/\d/.test(detail)) {
      detail += ` Try again in ${retryAfter} s.`;
    }
    super(detail);
    this.status = status;
    this.title = p.title || '';
    this.detail = detail;
    this.errors = errors.map((e) => ({ field: String(e.field || ''), message: String(e.message || '') }));
  }
}

function defaultMessage(status) {
  switch (status) {
    case 0: return 'The server could not be reached. Check the connection and try again.';
    case 401: return 'Please sign in.';
    case 403: return 'This action is not allowed.';
    case 404: return 'Not found.';
    case 409: return 'This conflicts with the current state.';
    case 422: return 'Some fields need attention.';
    case 429: return 'Too many attempts. Wait a moment and try again.';
    default: return status >= 500 ? `The server failed (HTTP ${status}).` : `Request failed (HTTP ${status}).`;
  }
}

/**
 * Call the API. `body` is sent as JSON; returns parsed JSON, text for text answers,
 * or null for 204. Throws ApiError.
 */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json, application/problem+json, text/plain' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) {
    headers['X-CSRF-Token'] = csrfToken;
  }
  let res;
  try {
    res = await fetch(API + path, init);
  } catch {
    throw new ApiError(0, null);
  }
  if (!res.ok) {
    let problem = null;
    const type = res.headers.get('Content-Type') || '';
    try {
      if (type.includes('json')) {
        problem = await res.json();
      } else {
        const text = (await res.text()).trim();
        if (text && text.length < 300 && !text.startsWith('<')) problem = { detail: text };
      }
    } catch {
      problem = null;
    }
    const err = new ApiError(res.status, problem, res.headers.get('Retry-After'));
    if (res.status === 401 && !path.startsWith('/auth/') && unauthorizedHandler) {
      unauthorizedHandler(err);
    }
    throw err;
  }
  if (res.status === 204) return null;
  const type = res.headers.get('Content-Type') || '';
  if (type.includes('json')) return res.json();
  return res.text();
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body === undefined ? {} : body);
export const put = (path, body) => api('PUT', path, body);
export const del = (path) => api('DELETE', path);

/** Query string from an object, leaving out null/undefined/'' values. */
export function qs(params) {
  const parts = Object.entries(params)
    .filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  return parts.length ? `?${parts.join('&')}` : '';
}
