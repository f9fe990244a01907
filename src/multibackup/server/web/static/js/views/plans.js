// #/plans/ID (settings, charts, history, snapshots) and #/plans/new, #/plans/ID/edit.

import { get, post, put } from '../api.js';
import { navigate } from '../app.js';
import { lineChart } from '../charts.js';
import {
  actionButton, alertRegion, badge, checkedValues, checkGroup, dl, empty, errorBox, field,
  formatBytes, formatDuration, h, lines, loading, localTimezone, onSubmit, pageHeader, section,
  submitButton, table, timeEl, timezoneList, toast,
} from '../ui.js';
import { deleteButton, enc, planStatus, RUN_HEADERS, runRow } from './common.js';

export async function planPage(ctx, id) {
  const [plan, history, runs] = await Promise.all([
    get(`/plans/${enc(id)}`),
    get(`/plans/${enc(id)}/history?limit=100`).catch(() => []),
    get(`/runs?plan_id=${enc(id)}&limit=50`).catch(() => []),
  ]);
  if (!ctx.alive()) return;
  const snapshots = h('div', { testid: 'snapshots' }, loading('Reading snapshots from the repository…'));

  const runBtn = actionButton('Run now', async () => {
    try {
      const run = await post(`/plans/${enc(plan.id)}/run`);
      navigate(`#/runs/${enc(run.id)}`);
    } catch (err) {
      toast(`${plan.name}: ${err.detail}`, 'error');
    }
  }, { class: 'btn btn-primary', testid: 'run-now' });
  const delBtn = deleteButton(`plan ${plan.name}`, `/plans/${enc(plan.id)}`, plan.name,
    () => navigate('#/'), { announce: `Deleted plan ${plan.name}.`, class: 'btn btn-danger' });

  const status = planStatus(plan);
  const retention = plan.retention
    ? Object.entries(plan.retention).filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${k.replace(/^keep_/, '')} ${v}`).join(', ')
    : 'keep everything';

  ctx.render(
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ' / plan'),
    pageHeader(plan.name, runBtn, h('a', { class: 'btn', href: `#/plans/${enc(plan.id)}/edit`, testid: 'edit-plan' }, 'Edit'), delBtn),
    h('div', { class: 'grid-2' },
      section('Settings', h('div', { testid: 'plan-settings' }, dl([
        ['Status', h('span', { 'aria-live': 'polite' }, badge(status, { testid: 'plan-status' }), ' ', badge(plan.enabled === false ? 'disabled' : 'enabled'),
          plan.running && plan.running_run_id ? [' ', h('a', { href: `#/runs/${enc(plan.running_run_id)}` }, 'watch the run')] : null)],
        ['Sources', list(plan.sources)],
        ['Destinations', list(plan.destinations)],
        ['Schedule', plan.schedule ? h('span', null, plan.schedule,
          plan.schedule_cron && plan.schedule_cron !== plan.schedule ? h('span', { class: 'muted mono' }, ` (${plan.schedule_cron})`) : null)
          : 'manual only'],
        ['Time zone', plan.timezone || 'UTC'],
        ['Next run', plan.next_run ? timeEl(plan.next_run) : '—'],
        ['Last run', plan.last_run ? h('a', { href: `#/runs/${enc(plan.last_run.id)}` }, badge(plan.last_run.status), ' ', timeEl(plan.last_run.finished_at, 'not finished')) : 'never'],
        ['Retention', retention],
        plan.exclude && plan.exclude.length ? ['Exclude', list(plan.exclude)] : null,
        plan.tags && plan.tags.length ? ['Tags', plan.tags.join(', ')] : null,
        ['Catch up missed runs', plan.catch_up === false ? 'no' : 'yes'],
        ['Runs on', plan.region ? `workers of region ${plan.region}` : 'the server'],
      ]))),
      section('Snapshots', snapshots)),
    section('Over time', h('div', { class: 'charts' },
      h('figure', null, h('figcaption', null, 'Stored size'),
        lineChart({ title: 'Stored size', testid: 'chart-stored', format: formatBytes,
          points: history.map((r) => ({ time: r.finished_at || r.started_at, value: r.stored_bytes, status: r.status })) })),
      h('figure', null, h('figcaption', null, 'Run duration'),
        lineChart({ title: 'Run duration', testid: 'chart-duration', format: formatDuration, tone: 'secondary',
          points: history.map((r) => ({ time: r.started_at, value: r.duration, status: r.status })) })))),
    section('Run history', runs.length
      ? table(RUN_HEADERS, runs.map((r) => runRow(r, false)), { testid: 'run-history' })
      : empty('This plan has not run yet.')),
  );

  if (plan.running) {
    // Show the result when the run ends (the run page has the live log).
    ctx.later(() => planPage(ctx, id).catch(() => {}), 5000);
  }

  try {
    const snaps = await get(`/plans/${enc(plan.id)}/snapshots`);
    if (!ctx.alive()) return;
    const sorted = [...snaps].sort((a, b) => String(b.time).localeCompare(String(a.time)));
    snapshots.replaceChildren(sorted.length
      ? table(['Snapshot', 'Time', ['Host', 'narrow-hide'], 'Paths'], sorted.map((s) => h('tr', { testid: 'snapshot-row', 'data-snapshot-id': s.id },
        h('td', null, h('a', { class: 'mono', href: `#/plans/${enc(plan.id)}/snapshots/${enc(s.id)}`, testid: 'snapshot-link', 'aria-label': `Browse snapshot ${s.short_id || s.id}` }, s.short_id || String(s.id).slice(0, 8))),
        h('td', null, timeEl(s.time)),
        h('td', { class: 'narrow-hide' }, s.hostname || '—'),
        h('td', { class: 'wrap' }, (s.paths || []).join(', ')))), { testid: 'snapshot-list' })
      : empty('No snapshots yet: they appear after the first successful run.'));
  } catch (err) {
    if (ctx.alive()) snapshots.replaceChildren(errorBox(err, { testid: 'snapshots-error' }));
  }
}

function list(items) {
  if (!items || !items.length) return '—';
  return h('ul', { class: 'plain' }, items.map((i) => h('li', { class: 'wrap' }, String(i))));
}

// ---- form ------------------------------------------------------------------------------

const READ_ONLY = ['id', 'schedule_cron', 'next_run', 'last_run', 'running', 'created_at', 'organisation_id'];

export async function planFormPage(ctx, id) {
  const editing = id !== undefined;
  const [plan, sources, destinations] = await Promise.all([
    editing ? get(`/plans/${enc(id)}`) : Promise.resolve(null),
    get('/sources').catch(() => []),
    get('/destinations'),
  ]);
  if (!ctx.alive()) return;
  const p = plan || { name: '', sources: [], destinations: [], schedule: 'daily 02:30', timezone: localTimezone(), retention: { keep_daily: 7, keep_weekly: 4, keep_monthly: 6 }, enabled: true, exclude: [] };
  const sourceNames = new Set(sources.map((s) => s.name));
  const namedSources = (p.sources || []).filter((s) => sourceNames.has(s));
  const otherSources = (p.sources || []).filter((s) => !sourceNames.has(s));
  const retention = p.retention || {};

  const region = alertRegion('form-alert');
  const form = h('form', { class: 'form', testid: 'plan-form', novalidate: true },
    region,
    field({ label: 'Name', name: 'name', value: p.name, required: true, testid: 'field-name' }),
    h('fieldset', { class: 'group' }, h('legend', null, 'What to back up'),
      checkGroup({ legend: 'Saved sources', name: 'sources', testid: 'plan-sources',
        items: sources.map((s) => [s.name, s.name, s.config?.url || '']), checked: namedSources,
        emptyText: 'No saved sources: type paths or URLs below.' }),
      field({ label: 'Paths and URLs', name: 'source_paths', type: 'textarea', rows: 3, value: otherSources.join('\n'),
        fields: 'source_paths sources', testid: 'field-source-paths', placeholder: '/var/www\nsftp://deploy@web1/var/www',
        hint: 'One absolute path or source URL per line, in addition to the sources ticked above.' })),
    checkGroup({ legend: 'Destinations', name: 'destinations', testid: 'plan-destinations',
      items: destinations.map((d) => [d.name, d.name, d.location || '']), checked: p.destinations || [],
      hint: 'Every run lands on each ticked destination.',
      emptyText: 'No destinations yet: add one first.' }),
    h('div', { class: 'row-2' },
      field({ label: 'Schedule', name: 'schedule', value: p.schedule || '', testid: 'field-schedule',
        hint: 'daily 02:30, hourly, weekly mon 03:00, or a cron line such as 30 2 * * *. Empty: manual runs only.' }),
      field({ label: 'Time zone', name: 'timezone', value: p.timezone || 'UTC', list: 'tz-list', testid: 'field-timezone',
        hint: 'An IANA name such as Europe/Berlin.' })),
    timezoneList('tz-list'),
    field({ label: 'Region', name: 'region', value: p.region || '', testid: 'field-region', autocomplete: 'off',
      hint: 'Empty: the server runs it. A region name (e.g. eu-west): a `multibackup worker --region` there runs it, near the data.' }),
    h('fieldset', { class: 'group', 'data-field': 'retention' }, h('legend', null, 'Retention'),
      h('p', { class: 'hint' }, 'How many snapshots to keep after each run. Leave all empty to keep everything.'),
      h('p', { class: 'field-error', hidden: true }),
      h('div', { class: 'row-3' },
        field({ label: 'Daily', name: 'retention.keep_daily', type: 'number', min: 0, value: retention.keep_daily ?? '', inputmode: 'numeric', testid: 'field-keep-daily' }),
        field({ label: 'Weekly', name: 'retention.keep_weekly', type: 'number', min: 0, value: retention.keep_weekly ?? '', inputmode: 'numeric', testid: 'field-keep-weekly' }),
        field({ label: 'Monthly', name: 'retention.keep_monthly', type: 'number', min: 0, value: retention.keep_monthly ?? '', inputmode: 'numeric', testid: 'field-keep-monthly' }))),
    field({ label: 'Exclude', name: 'exclude', type: 'textarea', rows: 2, value: (p.exclude || []).join('\n'), testid: 'field-exclude',
      placeholder: '*.tmp\nnode_modules', hint: 'Patterns of files not to back up, one per line.' }),
    field({ label: 'Repository password', name: 'password', type: 'password', required: !editing, autocomplete: 'new-password', testid: 'field-password',
      hint: editing ? 'Stored encrypted. Leave empty to keep it.' : 'Encrypts the backups. Keep a copy somewhere safe: without it no one, not even this server, can restore.' }),
    field({ label: 'Enabled (runs on its schedule)', name: 'enabled', type: 'checkbox', value: p.enabled !== false, testid: 'field-enabled' }),
    h('div', { class: 'form-actions' },
      submitButton(editing ? 'Save changes' : 'Create plan', { testid: 'save' }),
      h('a', { class: 'btn btn-link', href: editing ? `#/plans/${enc(id)}` : '#/' }, 'Cancel')));

  onSubmit(form, region, async () => {
    const el = form.elements;
    const num = (name) => {
      const v = el[name].value.trim();
      return v === '' ? null : Number(v);
    };
    const keep = { ...retention };
    for (const k of ['keep_daily', 'keep_weekly', 'keep_monthly']) {
      const v = num(`retention.${k}`);
      if (v === null) delete keep[k];
      else keep[k] = v;
    }
    const body = {};
    if (editing) {
      for (const [k, v] of Object.entries(p)) if (!READ_ONLY.includes(k)) body[k] = v;
    }
    Object.assign(body, {
      name: el.name.value.trim(),
      sources: [...checkedValues(form, 'sources'), ...lines(el.source_paths.value)],
      destinations: checkedValues(form, 'destinations'),
      schedule: el.schedule.value.trim() || null,
      timezone: el.timezone.value.trim() || 'UTC',
      retention: Object.keys(keep).length ? keep : null,
      exclude: lines(el.exclude.value),
      enabled: el.enabled.checked,
      region: el.region.value.trim() || null,
    });
    if (el.password.value) body.password = el.password.value;
    else delete body.password;
    const saved = editing ? await put(`/plans/${enc(id)}`, body) : await post('/plans', body);
    toast(`Plan ${saved.name} saved.`, 'ok');
    navigate(`#/plans/${enc(saved.id)}`);
  });

  ctx.render(
    pageHeader(editing ? `Edit plan ${p.name}` : 'New plan'),
    destinations.length ? null : h('p', { class: 'alert alert-info' }, 'A plan needs a destination. ',
      h('a', { href: '#/destinations/new' }, 'Add a destination'), ' first.'),
    h('div', { class: 'card' }, form),
  );
  if (!editing) form.elements.name.focus();
}
