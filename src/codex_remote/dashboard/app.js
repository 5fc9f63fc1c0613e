// codex-remote dashboard. Every value from a machine or a job reaches the DOM as text
// (textContent, Text nodes), never as HTML: a job named <img src=x onerror=...> shows as text.
'use strict';

const SECRET = document.querySelector('meta[name="dashboard-secret"]').content;
const STATES = ['running', 'succeeded', 'failed', 'cancelled', 'lost', 'start_failed'];
const UP_STAGES = ['config', 'ssh', 'install', 'serve', 'ready'];
// The log view keeps at most this many lines; older ones are dropped with a mark.
const MAX_LOG_LINES = 5000;

let jobs = [];
let machineNames = [];
let view = null; // the open job: {machine, id, source, ...}

// el('td', {class: 'x'}, 'text', child): children that are strings become Text nodes.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.dataset[k.slice(5)] = v;
    else if (k === 'title' || k === 'type' || k === 'value') e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: 'application/json' } });
  const body = await r.json();
  if (!r.ok) throw new Error(body.message || r.statusText);
  return body;
}

// State-changing calls are POST with the page's secret (the server refuses them without it).
async function post(url, body) {
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Dashboard-Secret': SECRET },
    body: JSON.stringify(body || {}),
  });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(answer.message || r.statusText);
  return answer;
}

function yesNo(v) {
  if (v === true) return el('span', { class: 'ok' }, 'ok');
  if (v === false) return el('span', { class: 'bad' }, 'failed');
  return '-';
}

function fmtTime(t) {
  if (!t) return '-';
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString('sv-SE'); // YYYY-MM-DD HH:MM:SS, local time
}

function fmtDuration(job) {
  let ms = job.duration_ms;
  if (job.status === 'running' && job.started_at) ms = Date.now() - new Date(job.started_at);
  if (ms === null || ms === undefined || isNaN(ms)) return '-';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
}

// ---- machines ----

function upCell(up, transport) {
  if (!up) return el('span', { class: 'muted' }, '');
  if (up.running) return el('span', { class: 'stages' }, 'running machine up…');
  const r = up.report || {};
  const reached = UP_STAGES.indexOf(r.stage);
  const stages = el('span', { class: 'stages' });
  UP_STAGES.forEach((s, i) => {
    if (s === 'serve' && transport !== 'http') return; // only HTTP machines start a serve
    if (i < reached || (i === reached && r.ok)) stages.append(el('span', { class: 'done' }, '✓ ' + s));
    else if (i === reached) stages.append(el('span', { class: 'failed' }, '✗ ' + s));
  });
  const message = [r.message, r.hint].filter(Boolean).join(' — ');
  return el('span', { class: 'up-result', 'data-ok': String(!!r.ok), 'data-stage': r.stage || '' },
    stages, el('span', { class: r.ok ? 'muted' : 'error' }, message));
}

// The machine's GPUs (codexd with capability `gpus`): one line each, and the queue.
function gpuList(report) {
  if (!report) return null;
  if (!report.gpus.length) return el('div', { class: 'gpus muted' }, report.error || 'no GPUs');
  const lines = report.gpus.map((g) => {
    const state = g.jobs.length ? 'held by ' + g.jobs.map((j) => j.slice(0, 8)).join(', ')
      : (g.free ? 'free' : 'busy');
    return el('li', { 'data-gpu': String(g.index), 'data-free': String(g.free) },
      `GPU ${g.index} ${g.name} ${g.memory_used_mib}/${g.memory_total_mib} MiB ${g.utilization_percent}% ${state}`);
  });
  const queued = report.queued ? el('li', { class: 'muted' }, `${report.queued} queued`) : null;
  return el('ul', { class: 'gpus' }, ...lines, queued);
}

function renderMachines(list) {
  const body = document.querySelector('#machines tbody');
  const rows = list.map((m) => {
    const c = m.check || {};
    const up = el('button', { type: 'button', class: 'up' }, 'Up');
    up.disabled = !!(m.up && m.up.running);
    up.addEventListener('click', () => machineUp(m.name, up));
    const state = m.checking && !m.check ? el('span', { class: 'muted' }, 'checking…') : yesNo(c.daemon_ok);
    const codexd = el('span', {}, state, c.error ? el('div', { class: 'error' }, c.error) : null, gpuList(c.gpus));
    return el('tr', { 'data-machine': m.name, 'data-ok': String(!!c.ok) },
      el('td', {}, m.name), el('td', {}, c.transport || '-'), el('td', {}, yesNo(c.ssh_ok)),
      el('td', { class: 'daemon' }, codexd), el('td', {}, c.codexd_version || '-'),
      el('td', {}, c.latency_ms !== undefined && c.latency_ms !== null ? c.latency_ms + ' ms' : '-'),
      el('td', { class: 'time' }, fmtTime(c.checked_at)), el('td', {}, up), el('td', { class: 'up-cell' }, upCell(m.up, c.transport)));
  });
  body.replaceChildren(...rows);
  const names = list.map((m) => m.name);
  if (names.join('\n') !== machineNames.join('\n')) {
    machineNames = names;
    const form = document.querySelector('#start-form select[name=machine]');
    const keep = form.value;
    form.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
    if (names.includes(keep)) form.value = keep;
    const filter = document.getElementById('filter-machine');
    const keepFilter = filter.value;
    filter.replaceChildren(el('option', { value: '' }, 'all'), ...names.map((n) => el('option', { value: n }, n)));
    filter.value = keepFilter;
  }
}

async function machineUp(name, button) {
  button.disabled = true;
  try {
    await post('/api/machines/' + encodeURIComponent(name) + '/up');
  } catch (e) {
    button.disabled = false;
    alertError(e);
  }
  refreshMachines();
}

async function refreshMachines() {
  try {
    renderMachines((await getJSON('/api/machines')).machines);
  } catch (e) { /* the next tick tries again */ }
}

// ---- jobs ----

function jobMatches(j) {
  const m = document.getElementById('filter-machine').value;
  const s = document.getElementById('filter-state').value;
  const t = document.getElementById('filter-text').value.trim().toLowerCase();
  if (m && j.machine !== m) return false;
  if (s && j.state !== s) return false;
  if (t) {
    const hay = [j.cmd, j.name, j.exec_id, j.machine, j.cwd].filter(Boolean).join('\n').toLowerCase();
    if (!hay.includes(t)) return false;
  }
  return true;
}

function renderJobs() {
  const body = document.querySelector('#jobs tbody');
  const rows = jobs.filter(jobMatches).map((j) => {
    let action = null;
    if (j.status === 'running') {
      action = el('button', { type: 'button', class: 'cancel' }, j.cancel_requested_at ? 'cancelling…' : 'Cancel');
      action.disabled = !!j.cancel_requested_at;
      action.addEventListener('click', (ev) => { ev.stopPropagation(); cancelJob(j, action); });
    }
    const row = el('tr', { 'data-id': j.exec_id, 'data-machine': j.machine, 'data-state': j.state },
      el('td', {}, j.machine), el('td', { class: 'name' }, j.name || ''),
      el('td', { class: 'cmd', title: j.cmd }, j.cmd),
      el('td', { class: 'state state-' + j.state }, j.state),
      el('td', {}, j.exit_code === null || j.exit_code === undefined ? (j.signal ? 'sig ' + j.signal : '-') : String(j.exit_code)),
      el('td', { class: 'time' }, fmtTime(j.started_at || j.created_at)), el('td', {}, fmtDuration(j)), el('td', {}, action));
    if (view && view.id === j.exec_id && view.machine === j.machine) row.classList.add('selected');
    row.addEventListener('click', () => openJob(j.machine, j.exec_id));
    return row;
  });
  body.replaceChildren(...rows);
}

async function refreshJobs() {
  try {
    const answer = await getJSON('/api/jobs');
    jobs = answer.jobs;
    const errors = document.getElementById('jobs-errors');
    errors.replaceChildren(...answer.errors.map((e) => el('div', {}, e.machine + ': ' + e.message)));
    renderJobs();
    document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) { /* the next tick tries again */ }
}

async function cancelJob(j, button) {
  button.disabled = true;
  button.textContent = 'cancelling…';
  try {
    const status = await post('/api/jobs/' + encodeURIComponent(j.machine) + '/' + encodeURIComponent(j.exec_id) + '/cancel');
    Object.assign(j, status);
    renderJobs();
  } catch (e) {
    alertError(e);
  }
  refreshJobs();
}

function alertError(e) {
  document.getElementById('jobs-errors').replaceChildren(el('div', {}, String(e.message || e)));
}

document.getElementById('start-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const error = document.getElementById('start-error');
  error.textContent = '';
  const button = f.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const job = await post('/api/jobs', {
      machine: f.machine.value, cmd: f.cmd.value, cwd: f.cwd.value, name: f.elements.name.value,
    });
    f.cmd.value = '';
    jobs.unshift(job);
    renderJobs();
    openJob(job.machine, job.exec_id);
    refreshJobs();
  } catch (e) {
    error.textContent = String(e.message || e);
  } finally {
    button.disabled = false;
  }
});

for (const id of ['filter-machine', 'filter-state', 'filter-text']) {
  document.getElementById(id).addEventListener('input', renderJobs);
}

// ---- job view: live output over server-sent events ----

const log = document.getElementById('log');

function closeView() {
  if (view && view.source) view.source.close();
  view = null;
  document.getElementById('job-view').hidden = true;
  renderJobs();
}

function showStatus(job) {
  document.getElementById('view-cmd').textContent = job.cmd;
  document.getElementById('view-status').textContent = JSON.stringify(job, null, 2);
  const state = document.getElementById('view-state');
  state.textContent = job.state + (job.exit_code !== null && job.exit_code !== undefined ? ' (exit ' + job.exit_code + ')' : '');
  state.className = 'state-' + job.state;
}

function mark(text) {
  return el('div', { class: 'mark' }, text);
}

function appendLine(line) {
  // Offsets grow along a stream: one not past the last seen is a repeat after a reconnect.
  const seen = view.offsets[line.stream];
  if (seen !== undefined && line.offset <= seen) return;
  view.offsets[line.stream] = line.offset;
  const last = view.partial[line.stream];
  if (last) {
    last.append(line.line); // the rest of a line that came partial
  } else {
    const div = el('div', { class: line.stream }, line.line);
    log.append(div);
    view.lines += 1;
    trimLog();
    if (line.partial) view.partial[line.stream] = div;
  }
  if (!line.partial) view.partial[line.stream] = null;
}

// Memory stays bounded for any log: past MAX_LOG_LINES the oldest lines go, and one mark says how many.
function trimLog() {
  while (view.lines > MAX_LOG_LINES) {
    const first = view.dropMark ? view.dropMark.nextSibling : log.firstChild;
    if (!first) break;
    if (first.classList.contains('mark')) { first.remove(); continue; }
    first.remove();
    view.lines -= 1;
    view.dropped += 1;
  }
  if (view.dropped > 0) {
    if (!view.dropMark) {
      view.dropMark = mark('');
      view.dropMark.classList.add('dropped');
      log.prepend(view.dropMark);
    }
    view.dropMark.textContent = '… ' + view.dropped + ' lines dropped (the view keeps the last ' + MAX_LOG_LINES + ')';
  }
}

// Scrolling forces a layout of the whole log: done once per frame, not once per line (a burst of
// thousands of lines would otherwise lay out thousands of times and freeze the page).
let scrollPending = false;
function scrollIfFollowing() {
  if (scrollPending) return;
  scrollPending = true;
  requestAnimationFrame(() => {
    scrollPending = false;
    if (!view) return;
    if (view.follow) log.scrollTop = log.scrollHeight;
    document.getElementById('log-follow').textContent = view.follow ? 'following' : 'auto-scroll paused (scroll to the end to resume)';
  });
}

// Auto-scroll stops when the user scrolls up and resumes at the bottom.
log.addEventListener('scroll', () => {
  if (!view) return;
  view.follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
  document.getElementById('log-follow').textContent = view.follow ? 'following' : 'auto-scroll paused (scroll to the end to resume)';
});

function openJob(machine, id) {
  if (view && view.source) view.source.close();
  view = { machine, id, offsets: {}, partial: {}, lines: 0, dropped: 0, dropMark: null, follow: true };
  const panel = document.getElementById('job-view');
  panel.hidden = false;
  panel.dataset.id = id;
  panel.dataset.machine = machine;
  document.getElementById('view-title').textContent = machine + ' / ' + id;
  document.getElementById('view-cmd').textContent = '';
  document.getElementById('view-status').textContent = '';
  document.getElementById('view-state').textContent = 'loading…';
  log.replaceChildren();
  renderJobs();
  const url = '/api/jobs/' + encodeURIComponent(machine) + '/' + encodeURIComponent(id) + '/logs';
  const current = view;
  const source = new EventSource(url);
  view.source = source;
  const handle = (kind, fn) => source.addEventListener(kind, (ev) => {
    if (view !== current) return;
    fn(JSON.parse(ev.data));
    scrollIfFollowing();
  });
  handle('skipped', (s) => log.append(mark('… ' + s.bytes + ' earlier bytes of ' + s.stream + ' not loaded')));
  handle('log', appendLine);
  handle('status', showStatus);
  handle('end', (job) => {
    showStatus(job);
    source.close();
    panel.dataset.ended = 'true';
  });
  handle('problem', (p) => {
    log.append(mark('! ' + p.message));
    if (p.fatal) source.close();
  });
  panel.dataset.ended = 'false';
}

document.getElementById('view-close').addEventListener('click', closeView);

// Each refresh waits for the last one to end, so a slow machine never piles calls up.
function every(ms, refresh) {
  const tick = async () => {
    await refresh();
    setTimeout(tick, ms);
  };
  tick();
}
every(2000, refreshMachines);
every(2000, refreshJobs);
