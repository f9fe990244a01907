// Destinations and sources: lists with health and "test", and their add/edit forms.
// Both are a config-file table as JSON ({name, config}); secrets are write-only.

import { get, post, put } from '../api.js';
import {
  actionButton, alertRegion, badge, clear, clearErrors, empty, field, formatBytes,
  formatKeyValues, formatNumber, h, onSubmit, pageHeader, parseKeyValues, section, setAlert,
  showFormError, submitButton, timeEl, toast,
} from '../ui.js';
import { navigate } from '../app.js';
import { deleteButton, destinationHealth, enc } from './common.js';

const SECRET_KEYS = ['secret_access_key', 'account_key', 'password', 'key_passphrase', 'credential',
  'session_token', 'sas_token'];

const KINDS = {
  destinations: {
    one: 'destination',
    title: 'Destinations',
    addLabel: 'Add destination',
    fields: [
      { key: 'location', label: 'Location', required: true, placeholder: 's3://bucket/prefix',
        hint: 'Where the repository lives: s3://bucket/prefix, azure://container/prefix, gs://bucket/prefix, sftp://user@host/path, webdavs://host/path, or a local folder such as /srv/backups/site.' },
      { key: 'endpoint', label: 'Endpoint', placeholder: 'https://s3.example.com', hint: 'For S3-compatible services other than AWS.' },
      { key: 'region', label: 'Region', placeholder: 'eu-west-1' },
      { key: 'access_key_id', label: 'Access key ID', autocomplete: 'off' },
      { key: 'secret_access_key', label: 'Secret access key', secret: true },
    ],
    moreHint: 'Other settings of the destination, one key = value per line (for example addressing = path, or provider = oss). Numbers and true/false are understood.',
  },
  sources: {
    one: 'source',
    title: 'Sources',
    addLabel: 'Add source',
    fields: [
      { key: 'url', label: 'URL', required: true, placeholder: 'sftp://deploy@web1.example.com/var/www',
        hint: 'What to back up, as a URL: sftp://, ftp://, mysql://, postgresql://, sqlite:///path/to/db, redis://, or a bucket (s3://...). A folder on this server needs no saved source: type its path in the plan.' },
      { key: 'password', label: 'Password', secret: true, hint: 'For databases, SFTP and FTP sources that log in with a password.' },
    ],
    moreHint: 'Other settings of the source, one key = value per line (for example key_file = /etc/multibackup/id_ed25519).',
  },
};

// ---- lists -----------------------------------------------------------------------------

export function destinationsPage(ctx) {
  return listPage(ctx, 'destinations');
}

export function sourcesPage(ctx) {
  return listPage(ctx, 'sources');
}

async function listPage(ctx, kind) {
  const spec = KINDS[kind];
  const items = await get(`/${kind}`);
  const reload = () => listPage(ctx, kind).catch((err) => toast(err.detail || String(err), 'error'));
  ctx.render(
    pageHeader(spec.title, h('a', { class: 'btn btn-primary', href: `#/${kind}/new`, testid: `new-${spec.one}` }, spec.addLabel)),
    items.length
      ? h('ul', { class: 'cards', testid: `${spec.one}-list` }, items.map((item) => kind === 'destinations'
        ? destinationCard(item, reload) : sourceCard(item, reload)))
      : section(`No ${kind} yet`, empty(kind === 'destinations'
        ? 'A destination is where backups are stored: a cloud bucket, a server over SFTP or WebDAV, or a local folder. '
        : 'A saved source names something to back up, with its credentials, so plans can use it by name. ',
      h('a', { href: `#/${kind}/new` }, `${spec.addLabel}.`))),
  );
}

function testButton(kind, item) {
  const result = h('span', { class: 'test-result', role: 'status', testid: `${kind === 'destinations' ? 'destination' : 'source'}-test-result` });
  const btn = actionButton('Test', async () => {
    clear(result, 'Testing…');
    try {
      const res = await post(`/${kind}/${enc(item.id)}/test`);
      showTest(result, res);
    } catch (err) {
      showTest(result, { ok: false, error: err.detail });
    }
  }, { class: 'btn btn-small', 'aria-label': `Test ${item.name}` });
  return { btn, result };
}

function removeButton(kind, item, reload) {
  const what = `${kind === 'destinations' ? 'destination' : 'source'} ${item.name}`;
  return deleteButton(what, `/${kind}/${enc(item.id)}`, item.name, reload,
    { announce: `Deleted ${item.name}.`, 'aria-label': `Delete ${item.name}` });
}

function destinationCard(d, reload) {
  const test = testButton('destinations', d);
  const health = d.health || {};
  const state = destinationHealth(d);
  return h('li', { class: 'card item-card', testid: 'destination-row', 'data-name': d.name, 'data-health': state },
    h('div', { class: 'item-head' },
      h('h2', null, d.name), badge(state, { testid: 'destination-health' }),
      health.lagging && state === 'error' ? badge('lagging') : null),
    h('p', { class: 'mono muted wrap' }, d.location || d.config?.location || ''),
    h('dl', { class: 'props props-inline' },
      h('dt', null, 'Stored'), h('dd', { testid: 'destination-bytes' }, formatBytes(health.stored_bytes)),
      h('dt', null, 'Objects'), h('dd', null, formatNumber(health.objects)),
      h('dt', null, 'Last success'), h('dd', null, timeEl(health.last_success, 'never')),
      h('dt', null, 'Last failure'), h('dd', null, timeEl(health.last_failure, 'none'))),
    health.error ? h('p', { class: 'alert alert-error', testid: 'destination-error' }, health.error) : null,
    health.lagging ? h('p', { class: 'muted' }, 'Lagging: this destination missed recent runs; it is caught up on the next run.') : null,
    h('div', { class: 'item-actions' },
      test.btn,
      h('a', { class: 'btn btn-small', href: `#/destinations/${enc(d.id)}/edit`, 'aria-label': `Edit ${d.name}` }, 'Edit'),
      removeButton('destinations', d, reload)),
    test.result);
}

function sourceCard(s, reload) {
  const test = testButton('sources', s);
  const url = s.config?.url || s.location || '';
  return h('li', { class: 'card item-card', testid: 'source-row', 'data-name': s.name },
    h('div', { class: 'item-head' }, h('h2', null, s.name)),
    h('p', { class: 'mono muted wrap' }, url),
    s.secrets && s.secrets.length ? h('p', { class: 'muted' }, `Stored secrets: ${s.secrets.join(', ')}`) : null,
    h('div', { class: 'item-actions' },
      test.btn,
      h('a', { class: 'btn btn-small', href: `#/sources/${enc(s.id)}/edit`, 'aria-label': `Edit ${s.name}` }, 'Edit'),
      removeButton('sources', s, reload)),
    test.result);
}

function showTest(el, res) {
  if (res && res.ok) {
    clear(el, badge('ok'), ` Connected${res.latency_ms !== undefined && res.latency_ms !== null ? ` in ${Math.round(res.latency_ms)} ms` : ''}`);
    el.dataset.ok = 'true';
  } else {
    clear(el, badge('failed'), ` ${(res && res.error) || 'The test failed.'}`);
    el.dataset.ok = 'false';
  }
}

// ---- forms -----------------------------------------------------------------------------

export function destinationFormPage(ctx, id) {
  return formPage(ctx, 'destinations', id);
}

export function sourceFormPage(ctx, id) {
  return formPage(ctx, 'sources', id);
}

async function formPage(ctx, kind, id) {
  const spec = KINDS[kind];
  const editing = id !== undefined;
  const item = editing ? await get(`/${kind}/${enc(id)}`) : { name: '', config: {}, secrets: [] };
  const config = { ...(item.config || {}) };
  const stored = new Set(item.secrets || []);
  const own = new Set(spec.fields.map((f) => f.key));
  const rest = Object.fromEntries(Object.entries(config).filter(([k]) => !own.has(k)));

  const region = alertRegion('form-alert');
  const testResult = h('p', { class: 'test-result', role: 'status', 'aria-live': 'polite', testid: 'test-result' });
  const form = h('form', { class: 'form', testid: `${spec.one}-form`, novalidate: true },
    region,
    field({ label: 'Name', name: 'name', value: item.name, required: true, testid: 'field-name',
      hint: `A short name plans use to refer to this ${spec.one} (letters, digits, - and _).` }),
    spec.fields.map((f) => field({
      label: f.label,
      name: `config.${f.key}`,
      type: f.secret ? 'password' : 'text',
      value: f.secret ? '' : config[f.key] ?? '',
      required: f.required,
      placeholder: f.secret && stored.has(f.key) ? '•••••••• (stored)' : f.placeholder,
      autocomplete: f.secret ? 'new-password' : f.autocomplete || 'off',
      hint: f.secret && stored.has(f.key) ? 'Stored encrypted. Leave empty to keep it, or type a new one.' : f.hint,
      testid: `field-${f.key}`,
    })),
    field({ label: 'More settings', name: 'more', type: 'textarea', value: formatKeyValues(rest), rows: 4,
      hint: spec.moreHint, testid: 'field-more', fields: 'more config', placeholder: 'key = value' }),
    h('div', { class: 'form-actions' },
      submitButton(editing ? 'Save changes' : spec.addLabel, { testid: 'save' }),
      h('button', { type: 'button', class: 'btn', testid: kind === 'destinations' ? 'destination-test' : 'source-test' }, 'Test connection'),
      h('a', { class: 'btn btn-link', href: `#/${kind}` }, 'Cancel')),
    testResult);

  const collect = () => {
    const { values, bad } = parseKeyValues(form.elements.more.value);
    // Errors about keys typed under "More settings" are shown there.
    form.elements.more.setAttribute('data-field', ['more', ...Object.keys(values)].join(' '));
    if (bad.length) {
      const err = { status: 422, detail: 'More settings: each line must be key = value.', errors: bad.map((m) => ({ field: 'more', message: m })) };
      throw err;
    }
    const out = { ...values };
    for (const f of spec.fields) {
      const v = form.elements[`config.${f.key}`].value;
      const value = f.secret ? v : v.trim();
      if (value !== '') out[f.key] = value;
      else delete out[f.key];
    }
    return { name: form.elements.name.value.trim(), config: out };
  };

  const testBtn = form.querySelector('[data-testid$="-test"]');
  testBtn.addEventListener('click', async () => {
    if (testBtn.disabled) return;
    clearErrors(form);
    setAlert(region, 'error');
    let body;
    try {
      body = collect();
    } catch (err) {
      showFormError(form, region, err);
      return;
    }
    testBtn.disabled = true;
    testBtn.setAttribute('aria-busy', 'true');
    clear(testResult, 'Testing…');
    try {
      const secretTyped = spec.fields.some((f) => f.secret && body.config[f.key]);
      const unchanged = editing && !secretTyped && JSON.stringify(body.config) === JSON.stringify(config);
      // A stored secret cannot be sent back: an unchanged saved item is tested as saved.
      const res = unchanged
        ? await post(`/${kind}/${enc(id)}/test`)
        : await post(`/${kind}/test`, { config: body.config, ...(editing ? { id: item.id } : {}) });
      showTest(testResult, res);
    } catch (err) {
      clear(testResult);
      showFormError(form, region, err);
    } finally {
      testBtn.disabled = false;
      testBtn.removeAttribute('aria-busy');
    }
  });

  onSubmit(form, region, async () => {
    const body = collect();
    const saved = editing ? await put(`/${kind}/${enc(id)}`, body) : await post(`/${kind}`, body);
    toast(`${spec.one[0].toUpperCase()}${spec.one.slice(1)} ${saved.name || body.name} saved.`, 'ok');
    navigate(`#/${kind}`);
  });

  ctx.render(
    pageHeader(editing ? `Edit ${spec.one} ${item.name}` : spec.addLabel),
    h('div', { class: 'card' }, form),
  );
  if (!editing) form.elements.name.focus();
}

