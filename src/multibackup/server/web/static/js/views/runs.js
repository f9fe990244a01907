// #/runs (recent runs, filterable) and #/runs/ID (status, results, log; live while running).

import { get, post, qs } from '../api.js';
import {
  ACTIVE, actionButton, badge, clear, dl, empty, formatBytes, formatDuration, formatNumber, h,
  pageHeader, section, table, timeEl, toast,
} from '../ui.js';
import { enc, RUN_HEADERS_PLAN, runRow, runWhat } from './common.js';

const STATUSES = ['', 'queued', 'running', 'ok', 'partial', 'failed', 'cancelled', 'interrupted'];

export async function runsPage(ctx) {
  const status = ctx.query.get('status') || '';
  const runs = await get(`/runs${qs({ status, limit: 100 })}`);
  const select = h('select', { id: 'run-status-filter', testid: 'run-filter' },
    STATUSES.map((s) => h('option', { value: s, selected: s === status }, s ? s : 'any status')));
  select.addEventListener('change', () => {
    window.location.hash = select.value ? `#/runs?status=${enc(select.value)}` : '#/runs';
  });
  ctx.render(
    pageHeader('Runs'),
    h('div', { class: 'filters' }, h('label', { for: 'run-status-filter' }, 'Show '), select),
    section(status ? `Runs: ${status}` : 'Latest runs', runs.length
      ? table(RUN_HEADERS_PLAN, runs.map((r) => runRow(r)), { testid: 'runs' })
      : empty('No runs match.')),
  );
}

export async function runPage(ctx, id) {
  let run = await get(`/runs/${enc(id)}`);
  if (!ctx.alive()) return;

  const statusBox = h('p', { class: 'run-status', role: 'status', 'aria-live': 'polite', 'aria-atomic': 'true' });
  const details = h('div');
  const results = h('div');
  const problems = h('div');
  const log = h('pre', { class: 'log', testid: 'run-log', tabindex: '0', 'aria-label': 'Run log' });
  const logNote = h('p', { class: 'muted', testid: 'run-log-note' });
  const cancelBtn = actionButton('Cancel run', async () => {
    try {
      run = await post(`/runs/${enc(id)}/cancel`);
      update();
      toast(`Cancel requested for run #${id}.`, 'info');
    } catch (err) {
      toast(`Run #${id}: ${err.detail}`, 'error');
    }
  }, { class: 'btn btn-danger', testid: 'cancel-run' });
  const planLink = h('span');

  const kindTitle = run.kind === 'restore' ? 'Restore' : run.kind === 'migrate' ? 'Migration run' : 'Backup run';
  ctx.render(
    h('p', { class: 'crumbs' }, h('a', { href: '#/runs' }, 'Runs'), ' / ', planLink),
    pageHeader(`${kindTitle} #${run.id}`, cancelBtn),
    statusBox,
    h('div', { class: 'grid-2' }, section('Details', details), section('Destinations', results)),
    problems,
    section('Log', log, logNote),
  );

  let shownStatus = null;
  function update() {
    const active = ACTIVE.has(run.status);
    // Rewrite the live region only when the status changes, so it is announced once.
    const shown = `${run.status}/${Boolean(run.cancel_requested)}`;
    if (shownStatus !== shown) {
      shownStatus = shown;
      clear(statusBox, badge(run.status, { testid: 'run-status' }),
      active ? ` ${run.cancel_requested ? 'Cancelling…' : run.status === 'queued' ? 'Waiting for a worker…' : 'In progress…'} (refreshing every 2 s)` : ' Finished ',
      !active && run.finished_at ? timeEl(run.finished_at) : null);
    }
    cancelBtn.hidden = !active || Boolean(run.cancel_requested);
    clear(planLink, run.plan_id ? h('a', { href: `#/plans/${enc(run.plan_id)}` }, runWhat(run)) : runWhat(run));
    const snapshotId = run.snapshot && typeof run.snapshot === 'object' ? run.snapshot.id : run.snapshot;
    const snapshotShort = run.snapshot && typeof run.snapshot === 'object' ? run.snapshot.short_id || snapshotId : snapshotId;
    clear(details, dl([
      ['Kind', run.kind || 'backup'],
      run.kind === 'restore' && run.params ? ['Restore to', h('span', { class: 'mono wrap' }, run.params.target || '—')] : null,
      run.kind === 'restore' && run.params ? ['Paths', run.params.paths && run.params.paths.length
        ? h('ul', { class: 'plain' }, run.params.paths.map((p) => h('li', { class: 'mono wrap' }, p))) : 'everything'] : null,
      run.attempt && run.attempt > 1 ? ['Attempt', String(run.attempt)] : null,
      ['Trigger', run.trigger],
      ['Queued', timeEl(run.queued_at)],
      ['Started', timeEl(run.started_at, active ? 'not yet' : '—')],
      ['Finished', timeEl(run.finished_at, active ? 'not yet' : '—')],
      ['Duration', formatDuration(run.duration)],
      run.kind !== 'restore' ? ['Added', run.bytes_added === null || run.bytes_added === undefined ? '—' : formatBytes(run.bytes_added)] : null,
      ['Files', formatNumber(run.files)],
      ['Snapshot', snapshotId
        ? (run.plan_id ? h('a', { class: 'mono', href: `#/plans/${enc(run.plan_id)}/snapshots/${enc(snapshotId)}`, testid: 'run-snapshot' }, String(snapshotShort).slice(0, 12)) : snapshotId)
        : '—'],
      run.exit_code !== null && run.exit_code !== undefined ? ['Exit code', String(run.exit_code)] : null,
    ]));
    const dests = run.destinations || [];
    clear(results, dests.length
      ? table(['Destination', 'Result', 'Error'], dests.map((d) => h('tr', { testid: 'run-destination', 'data-name': d.name },
        h('th', { scope: 'row' }, d.name),
        h('td', null, badge(d.ok === null || d.ok === undefined ? (active ? 'running' : 'never') : d.ok ? 'ok' : 'failed')),
        h('td', { class: 'wrap' }, d.error || ''))), { testid: 'run-destinations' })
      : empty(active ? 'Results appear when the run finishes.' : 'No destination results.'));
    const errors = run.errors || [];
    const notes = run.notes || [];
    clear(problems,
      errors.length ? h('div', { class: 'alert alert-error', testid: 'run-errors' }, h('h2', null, 'Errors'),
        h('ul', null, errors.map((e) => h('li', { class: 'wrap' }, typeof e === 'string' ? e : JSON.stringify(e))))) : null,
      notes.length ? h('div', { class: 'alert alert-info', testid: 'run-notes' }, h('h2', null, 'Notes'),
        h('ul', null, notes.map((n) => h('li', { class: 'wrap' }, typeof n === 'string' ? n : JSON.stringify(n))))) : null);
  }

  async function refreshLog() {
    try {
      const text = await get(`/runs/${enc(id)}/log`);
      if (!ctx.alive()) return;
      const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      const body = typeof text === 'string' ? text : JSON.stringify(text, null, 2);
      if (log.textContent !== body) {
        log.textContent = body;
        if (atBottom) log.scrollTop = log.scrollHeight;
      }
      logNote.textContent = body ? '' : (ACTIVE.has(run.status) ? 'No output yet.' : 'This run wrote no log.');
    } catch (err) {
      if (ctx.alive()) logNote.textContent = `The log could not be read: ${err.detail}`;
    }
  }

  async function poll() {
    try {
      run = await get(`/runs/${enc(id)}`);
    } catch (err) {
      if (ctx.alive()) toast(`Run #${id} could not be refreshed: ${err.detail}`, 'error');
    }
    if (!ctx.alive()) return;
    update();
    await refreshLog();
    if (ACTIVE.has(run.status)) ctx.later(poll, 2000);
  }

  update();
  await refreshLog();
  if (ACTIVE.has(run.status)) ctx.later(poll, 2000);
}
