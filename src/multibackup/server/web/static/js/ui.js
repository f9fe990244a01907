// DOM building (no innerHTML: everything from the API is text), formatting, form helpers.

const PROPS = new Set(['value', 'checked', 'selected', 'indeterminate', 'disabled', 'open']);

/** Create an element: h('a', {href: '#/', class: 'x', onclick: fn}, 'text', child, [more]). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

function setProps(el, props) {
  if (!props) return;
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) {
      if (key === 'checked' || key === 'disabled') el[key] = false;
      continue;
    }
    if (key === 'class') {
      el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'testid') {
      el.setAttribute('data-testid', value);
    } else if (PROPS.has(key)) {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// ---- formatting ------------------------------------------------------------------------

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function formatBytes(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return '—';
  let value = Number(n);
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  if (unit === 0) return `${value} B`;
  const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const s = Number(seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function formatNumber(n) {
  if (n === null || n === undefined) return '—';
  return Number(n).toLocaleString();
}

export function parseTime(iso) {
  if (iso === null || iso === undefined || iso === '') return null;
  if (typeof iso === 'number') return new Date(iso * 1000); // seconds since the epoch
  if (/^\d+(\.\d+)?$/.test(iso)) return new Date(Number(iso) * 1000);
  // A time without a zone from the API is UTC.
  const text = /[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`;
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function relativeTime(iso, now = Date.now()) {
  const d = parseTime(iso);
  if (!d) return '—';
  const diff = Math.round((d.getTime() - now) / 1000);
  const abs = Math.abs(diff);
  let text;
  if (abs < 45) return diff <= 0 ? 'just now' : 'in a few seconds';
  if (abs < 90 * 60) text = `${Math.round(abs / 60)} min`;
  else if (abs < 36 * 3600) text = `${Math.round(abs / 3600)} h`;
  else if (abs < 60 * 86400) text = `${Math.round(abs / 86400)} d`;
  else return d.toLocaleDateString();
  return diff < 0 ? `${text} ago` : `in ${text}`;
}

/** <time> showing "3 min ago", the ISO time in title/datetime; kept fresh by tickTimes(). */
export function timeEl(iso, fallback = '—') {
  const d = parseTime(iso);
  if (!d) return h('span', { class: 'muted' }, fallback);
  return h('time', { datetime: d.toISOString(), title: `${d.toISOString()} (${d.toLocaleString()})`, 'data-rel': '' },
    relativeTime(d.toISOString()));
}

export function tickTimes() {
  const now = Date.now();
  for (const el of document.querySelectorAll('time[data-rel]')) {
    el.textContent = relativeTime(el.getAttribute('datetime'), now);
  }
}

export function absoluteTime(iso) {
  const d = parseTime(iso);
  return d ? d.toLocaleString() : '—';
}

// ---- status ----------------------------------------------------------------------------

const STATUS = {
  ok: ['ok', '✓', 'OK'],
  partial: ['warn', '!', 'Partial'],
  failed: ['bad', '✕', 'Failed'],
  cancelled: ['neutral', '–', 'Cancelled'],
  interrupted: ['warn', '!', 'Interrupted'],
  running: ['info', '●', 'Running'],
  queued: ['neutral', '…', 'Queued'],
  never: ['neutral', '–', 'Never run'],
  lagging: ['warn', '!', 'Lagging'],
  healthy: ['ok', '✓', 'Healthy'],
  error: ['bad', '✕', 'Error'],
  enabled: ['ok', '✓', 'Enabled'],
  disabled: ['neutral', '–', 'Disabled'],
};

/** A status badge: colour, a symbol and a word, never colour alone. */
export function badge(status, props = {}) {
  const [tone, symbol, label] = STATUS[status] || ['neutral', '•', String(status || 'unknown')];
  return h('span', { class: `badge badge-${tone}`, 'data-status': status, ...props },
    h('span', { class: 'badge-symbol', 'aria-hidden': 'true' }, symbol), label);
}

export const ACTIVE = new Set(['queued', 'running']);

// ---- page pieces -----------------------------------------------------------------------

export function pageHeader(title, ...actions) {
  return h('div', { class: 'page-header' },
    h('h1', { tabindex: '-1', 'data-page-title': '' }, title),
    actions.length ? h('div', { class: 'page-actions' }, actions) : null);
}

export function section(title, ...children) {
  const id = `s-${Math.random().toString(36).slice(2, 9)}`;
  return h('section', { class: 'card', 'aria-labelledby': id },
    h('h2', { id }, title), children);
}

export function empty(text, ...more) {
  return h('p', { class: 'empty' }, text, more);
}

export function loading(text = 'Loading…') {
  return h('p', { class: 'loading', role: 'status' }, text);
}

/** An error box for a failed load or action (role=alert so it is announced). */
export function errorBox(err, props = {}) {
  const message = err && err.detail ? err.detail : String(err && err.message ? err.message : err);
  return h('div', { class: 'alert alert-error', role: 'alert', ...props }, message);
}

/** An alert region placed at the top of a form: empty until there is something to say. */
export function alertRegion(testid) {
  return h('div', { class: 'form-alert', role: 'alert', 'aria-live': 'assertive', testid });
}

export function setAlert(region, kind, ...content) {
  clear(region, ...content);
  region.className = content.length ? `form-alert alert alert-${kind}` : 'form-alert';
}

export function toast(message, kind = 'info', ...extra) {
  const box = document.getElementById('toasts');
  const item = h('div', { class: `toast toast-${kind}` }, message, extra,
    h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', onclick: () => item.remove() }, '×'));
  box.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 15000 : 7000);
  return item;
}

export function table(headers, rows, props = {}) {
  return h('div', { class: 'table-wrap' },
    h('table', props,
      h('thead', null, h('tr', null, headers.map((t) => (Array.isArray(t)
        ? h('th', { scope: 'col', class: t[1] }, t[0]) : h('th', { scope: 'col' }, t))))),
      h('tbody', null, rows)));
}

export function dl(pairs) {
  return h('dl', { class: 'props' },
    pairs.filter(Boolean).map(([k, v]) => [h('dt', null, k), h('dd', null, v === null || v === undefined || v === '' ? '—' : v)]));
}

/** A button that disables itself and shows `busy` while `action` runs. */
export function actionButton(label, action, props = {}) {
  const btn = h('button', { type: 'button', class: 'btn', ...props }, label);
  btn.addEventListener('click', async () => {
    if (btn.disabled) return;
    btn.disabled = true;
    btn.setAttribute('aria-busy', 'true');
    try {
      await action(btn);
    } finally {
      btn.disabled = false;
      btn.removeAttribute('aria-busy');
    }
  });
  return btn;
}

// ---- forms -----------------------------------------------------------------------------

let fieldSeq = 0;

/**
 * A labelled input with a hint and an (initially empty) error line.
 * `name` is the API's field path (e.g. "config.endpoint"); errors are matched on it.
 */
export function field({ label, name, type = 'text', value, required, hint, placeholder, autocomplete,
  options, rows, testid, min, max, step, list, inputmode, spellcheck, fields }) {
  fieldSeq += 1;
  const id = `f${fieldSeq}-${name.replace(/[^a-z0-9]+/gi, '-')}`;
  const hintId = hint ? `${id}-hint` : null;
  const errId = `${id}-error`;
  const common = {
    id, name, required, placeholder, autocomplete, testid, 'data-field': fields || name,
    'aria-describedby': [hintId, errId].filter(Boolean).join(' '),
  };
  let input;
  if (type === 'textarea') {
    input = h('textarea', { ...common, rows: rows || 4, spellcheck: spellcheck === undefined ? 'false' : spellcheck });
    input.defaultValue = value ?? '';
  } else if (type === 'select') {
    input = h('select', common, (options || []).map((o) => {
      const [v, t] = Array.isArray(o) ? o : [o, o];
      return h('option', { value: v, selected: String(v) === String(value ?? '') }, t);
    }));
  } else if (type === 'checkbox') {
    input = h('input', { ...common, type, checked: Boolean(value) });
    input.defaultChecked = Boolean(value);
    return h('div', { class: 'field field-check' },
      h('div', { class: 'check' }, input, h('label', { for: id }, label)),
      hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
      h('p', { class: 'field-error', id: errId, hidden: true }));
  } else {
    input = h('input', { ...common, type, min, max, step, list, inputmode, spellcheck: spellcheck ?? (type === 'text' ? 'false' : undefined) });
    input.defaultValue = value ?? ''; // what form.reset() returns to
  }
  return h('div', { class: 'field' },
    h('label', { for: id }, label, required ? h('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : null),
    input,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
    h('p', { class: 'field-error', id: errId, hidden: true }));
}

/** A group of checkboxes in a fieldset; `name` is the API field, each value an item. */
export function checkGroup({ legend, name, items, checked = [], hint, testid, emptyText }) {
  fieldSeq += 1;
  const base = `f${fieldSeq}-${name}`;
  const errId = `${base}-error`;
  const set = new Set(checked);
  return h('fieldset', { class: 'field checkgroup', 'data-field': name, testid, 'aria-describedby': errId },
    h('legend', null, legend),
    hint ? h('p', { class: 'hint' }, hint) : null,
    items.length ? h('div', { class: 'checks' }, items.map(([value, text, extra], i) => h('div', { class: 'check' },
      h('input', { type: 'checkbox', id: `${base}-${i}`, name, value, checked: set.has(value), 'data-field': name }),
      h('label', { for: `${base}-${i}` }, text, extra ? h('span', { class: 'muted' }, ` ${extra}`) : null)))) :
      h('p', { class: 'muted' }, emptyText || 'None yet.'),
    h('p', { class: 'field-error', id: errId, hidden: true }));
}

export function checkedValues(form, name) {
  return [...form.querySelectorAll(`input[type=checkbox][name="${name}"]:checked`)].map((i) => i.value);
}

export function clearErrors(form) {
  for (const p of form.querySelectorAll('.field-error')) {
    p.hidden = true;
    p.textContent = '';
  }
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  for (const el of form.querySelectorAll('.field.invalid')) el.classList.remove('invalid');
}

function normalise(path) {
  return String(path || '')
    .replace(/\[(\d+)\]/g, '.$1')
    .replace(/^(body|config)\./, '')
    .replace(/\.\d+(?=\.|$)/g, '')
    .toLowerCase();
}

function sentence(text) {
  const t = String(text).trim();
  return /[.!?:]$/.test(t) ? t : `${t}.`;
}

function errorLine(e) {
  const field = e.field && !['body', 'config'].includes(e.field) ? e.field : '';
  return field && !e.message.startsWith(field) ? `${field}: ${e.message}` : e.message;
}

/** The form control (or fieldset) an API error field names, if any. */
function controlFor(form, fieldPath) {
  const want = normalise(fieldPath);
  if (!want) return null;
  const candidates = [...form.querySelectorAll('[data-field]')];
  const names = (el) => el.getAttribute('data-field').split(/\s+/).map(normalise);
  // Exact, then the error is inside the field (retention.keep_daily → retention), then by last part.
  return candidates.find((el) => names(el).includes(want))
    || candidates.find((el) => names(el).some((n) => want.startsWith(`${n}.`)))
    || candidates.find((el) => names(el).some((n) => n.split('.').pop() === want.split('.').pop()));
}

/**
 * Show an ApiError on a form: each errors[] entry next to its field (or in the alert region),
 * and the detail in the alert region. Nothing the user typed is touched.
 */
export function showFormError(form, region, err) {
  clearErrors(form);
  const unplaced = [];
  let first = null;
  for (const e of err.errors || []) {
    let control = controlFor(form, e.field);
    if (control && control.tagName === 'INPUT' && control.type === 'checkbox' && control.closest('fieldset')) {
      control = control.closest('fieldset');
    }
    if (!control) {
      unplaced.push(e);
      continue;
    }
    const wrap = control.closest('.field') || control;
    const errLine = wrap.querySelector('.field-error');
    if (errLine) {
      errLine.textContent = errLine.textContent ? `${errLine.textContent} ${e.message}` : e.message;
      errLine.hidden = false;
    }
    wrap.classList.add('invalid');
    control.setAttribute('aria-invalid', 'true');
    first = first || control;
  }
  const placed = (err.errors || []).length - unplaced.length;
  const extra = unplaced.filter((e) => errorLine(e) !== err.detail && e.message !== err.detail);
  setAlert(region, 'error',
    h('p', null, sentence(err.detail || 'Something went wrong.'),
      placed ? ` ${placed === 1 ? 'One field needs' : `${placed} fields need`} attention below.` : ''),
    extra.length ? h('ul', null, extra.map((e) => h('li', null, errorLine(e)))) : null);
  if (first && typeof first.focus === 'function' && first.tagName !== 'FIELDSET') {
    first.focus();
  } else if (first) {
    const box = first.querySelector('input');
    if (box) box.focus();
  } else {
    region.setAttribute('tabindex', '-1');
    region.focus();
  }
}

/** Lines of a textarea, trimmed, without blanks. */
export function lines(text) {
  return String(text || '').split('\n').map((l) => l.trim()).filter(Boolean);
}

/** "key = value" lines → object; numbers and true/false become JSON values. */
export function parseKeyValues(text) {
  const out = {};
  const bad = [];
  lines(text).forEach((line, i) => {
    if (line.startsWith('#')) return;
    const at = line.indexOf('=');
    if (at < 1) {
      bad.push(`line ${i + 1}: write key = value`);
      return;
    }
    const key = line.slice(0, at).trim();
    let value = line.slice(at + 1).trim();
    if (/^".*"$/.test(value)) value = value.slice(1, -1);
    else if (value === 'true') value = true;
    else if (value === 'false') value = false;
    else if (/^-?\d+$/.test(value)) value = Number(value);
    else if (/^[[{]/.test(value)) {
      try { value = JSON.parse(value); } catch { /* keep the text */ }
    }
    out[key] = value;
  });
  return { values: out, bad };
}

export function formatKeyValues(obj) {
  return Object.entries(obj || {})
    .map(([k, v]) => `${k} = ${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join('\n');
}

export function submitButton(label, props = {}) {
  return h('button', { type: 'submit', class: 'btn btn-primary', ...props }, label);
}

/** Run `action` on submit with the button disabled; errors go to the form. */
export function onSubmit(form, region, action) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const btn = form.querySelector('button[type=submit]');
    if (btn && btn.disabled) return;
    if (btn) { btn.disabled = true; btn.setAttribute('aria-busy', 'true'); }
    clearErrors(form);
    setAlert(region, 'error');
    try {
      await action(event);
    } catch (err) {
      if (err && err.status !== undefined) showFormError(form, region, err);
      else showFormError(form, region, { detail: String(err && err.message ? err.message : err), errors: [] });
    } finally {
      if (btn) { btn.disabled = false; btn.removeAttribute('aria-busy'); }
    }
  });
}

export function timezones() {
  try {
    if (Intl.supportedValuesOf) return Intl.supportedValuesOf('timeZone');
  } catch { /* old browser */ }
  return ['UTC', 'Europe/London', 'Europe/Berlin', 'America/New_York', 'Asia/Shanghai', 'Asia/Tokyo'];
}

export function localTimezone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

/** A <datalist> of IANA time zones (one per page is enough). */
export function timezoneList(id) {
  return h('datalist', { id }, ['UTC', ...timezones().filter((z) => z !== 'UTC')].map((z) => h('option', { value: z })));
}
