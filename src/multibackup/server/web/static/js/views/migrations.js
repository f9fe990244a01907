// #/migrations — saved bucket/folder migrations between two destinations (or FTP sources): list, run, add.

import { get, post, put } from '../api.js';
import {
  actionButton, alertRegion, badge, empty, field, h, lines, localTimezone, onSubmit, pageHeader,
  section, submitButton, timeEl, timezoneList, toast,
} from '../ui.js';
import { deleteButton, enc } from './common.js';

export async function migrationsPage(ctx, editing = null) {
  const [migrations, destinations, sources] = await Promise.all([get('/migrations'), get('/destinations'), get('/sources')]);
  if (!ctx.alive()) return;
  const reload = () => migrationsPage(ctx).catch((err) => toast(err.detail || String(err), 'error'));
  const edit = (m) => migrationsPage(ctx, m).catch((err) => toast(err.detail || String(err), 'error'));
  const e = editing || { options: {}, timezone: localTimezone() };
  const eo = e.options || {};
  // FTP can hold no repository, so it is a source kind, but a migration may start or end there
  const taken = new Set(destinations.map((d) => d.name));
  const ftp = sources.filter((src) => /^ftps?:\/\//i.test(src.url || '') && !taken.has(src.name));
  const names = [...destinations.map((d) => [d.name, `${d.name} — ${d.location || ''}`]),
    ...ftp.map((src) => [src.name, `${src.name} — ${src.url} (FTP source)`])];

  const rows = migrations.map((m) => {
    const o = m.options || {};
    return h('tr', { testid: 'migration-row', 'data-name': m.name },
      h('th', { scope: 'row' }, m.name),
      h('td', null, `${m.source} → ${m.destination}`),
      h('td', null, [o.mode || 'copy', o.delete ? ', delete extraneous' : ''].join('')),
      h('td', null, m.schedule || h('span', { class: 'muted' }, 'manual')),
      h('td', null, m.last_run ? h('a', { href: `#/runs/${enc(m.last_run.id)}` }, badge(m.last_run.status), ' ', timeEl(m.last_run.finished_at, '')) : h('span', { class: 'muted' }, 'never')),
      h('td', { class: 'actions' },
        actionButton('Run now', async () => {
          try {
            const run = await post(`/migrations/${enc(m.id)}/run`);
            toast(`Migration ${m.name} started. `, 'ok', h('a', { href: `#/runs/${enc(run.id)}`, testid: 'toast-run-link' }, 'View run'));
          } catch (err) {
            toast(`${m.name}: ${err.detail}`, 'error');
          }
        }, { class: 'btn btn-small', 'aria-label': `Run migration ${m.name} now` }),
        h('button', { type: 'button', class: 'btn btn-small', testid: 'migration-edit', 'aria-label': `Edit migration ${m.name}`, onclick: () => edit(m) }, 'Edit'),
        deleteButton(`migration ${m.name}`, `/migrations/${enc(m.id)}`, m.name, reload,
          { 'aria-label': `Delete migration ${m.name}` })));
  });

  const region = alertRegion('form-alert');
  const form = h('form', { class: 'form', testid: 'migration-form', novalidate: true },
    region,
    field({ label: 'Name', name: 'name', value: e.name || '', required: true, testid: 'field-name' }),
    h('div', { class: 'row-2' },
      field({ label: 'From (destination or FTP source)', name: 'source', type: 'select', value: e.source, options: [['', 'Choose…'], ...names], required: true, testid: 'field-source' }),
      field({ label: 'To (destination or FTP source)', name: 'destination', type: 'select', value: e.destination, options: [['', 'Choose…'], ...names], required: true, testid: 'field-destination' })),
    h('div', { class: 'row-2' },
      field({ label: 'Mode', name: 'options.mode', type: 'select', value: eo.mode || 'copy', testid: 'field-mode',
        options: [['copy', 'copy — add and update objects'], ['sync', 'sync — make the target match'], ['check', 'check — compare only']] }),
      field({ label: 'Parallel transfers', name: 'options.transfers', type: 'number', min: 1, value: eo.transfers ?? '', testid: 'field-transfers', hint: 'Empty: the default.' })),
    field({ label: 'Delete objects missing from the source (sync)', name: 'options.delete', type: 'checkbox', value: eo.delete, testid: 'field-delete' }),
    field({ label: 'At most this many deletions', name: 'options.max_delete', type: 'number', min: 0, value: eo.max_delete ?? '', testid: 'field-max-delete', hint: 'A safety limit for sync with delete. Empty: no limit.' }),
    field({ label: 'Compare checksums, not only size and time', name: 'options.checksum', type: 'checkbox', value: eo.checksum, testid: 'field-checksum' }),
    h('div', { class: 'row-2' },
      field({ label: 'Include', name: 'options.include', type: 'textarea', rows: 2, value: (eo.include || []).join('\n'), placeholder: 'images/**', hint: 'Glob patterns, one per line.' }),
      field({ label: 'Exclude', name: 'options.exclude', type: 'textarea', rows: 2, value: (eo.exclude || []).join('\n'), placeholder: '*.tmp', hint: 'Glob patterns, one per line.' })),
    h('div', { class: 'row-2' },
      field({ label: 'Schedule', name: 'schedule', value: e.schedule || '', testid: 'field-schedule', hint: 'daily 02:30, hourly, or cron. Empty: manual only.' }),
      field({ label: 'Time zone', name: 'timezone', value: e.timezone || localTimezone(), list: 'tz-list-m', testid: 'field-timezone' })),
    timezoneList('tz-list-m'),
    h('div', { class: 'form-actions' }, submitButton(editing ? 'Save changes' : 'Add migration', { testid: 'save' }),
      editing ? h('button', { type: 'button', class: 'btn btn-link', onclick: reload }, 'Cancel') : null));

  onSubmit(form, region, async () => {
    const el = form.elements;
    const options = { mode: el['options.mode'].value };
    if (el['options.delete'].checked) options.delete = true;
    if (el['options.checksum'].checked) options.checksum = true;
    const transfers = el['options.transfers'].value.trim();
    if (transfers) options.transfers = Number(transfers);
    const maxDelete = el['options.max_delete'].value.trim();
    if (maxDelete) options.max_delete = Number(maxDelete);
    const include = lines(el['options.include'].value);
    const exclude = lines(el['options.exclude'].value);
    if (include.length) options.include = include;
    if (exclude.length) options.exclude = exclude;
    const body = {
      name: el.name.value.trim(), source: el.source.value, destination: el.destination.value, options,
      schedule: el.schedule.value.trim() || null, timezone: el.timezone.value.trim() || 'UTC',
    };
    if (editing) Object.assign(body, { enabled: editing.enabled, catch_up: editing.catch_up, region: editing.region });
    const saved = editing ? await put(`/migrations/${enc(editing.id)}`, body) : await post('/migrations', body);
    toast(`Migration ${saved.name} saved.`, 'ok');
    await reload();
  });

  ctx.render(
    pageHeader('Migrations'),
    h('p', { class: 'lead' }, 'Copy or sync a bucket or folder from one destination to another: parallel, resumable and verified.'),
    section('Saved migrations', migrations.length
      ? h('div', { class: 'table-wrap' }, h('table', { testid: 'migrations' },
        h('thead', null, h('tr', null, ['Name', 'From → to', 'Mode', 'Schedule', 'Last run', h('span', { class: 'sr-only' }, 'Actions')].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, rows)))
      : empty('No migrations yet.')),
    section(editing ? `Edit migration ${editing.name}` : 'Add a migration', names.length >= 2 ? form
      : empty('A migration copies between two saved destinations (or FTP sources). ', h('a', { href: '#/destinations/new' }, 'Add destinations'), ' first.')),
  );
}
